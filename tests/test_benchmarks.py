"""The benchmark scripts credit the work actually done: samples from the trainer's own step record, and a line
saying when the config's `train.max_steps` stops a client early."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedhello.config import TrainConfig
from fedhello.plan import ClientUpdate, Plan

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def common(monkeypatch):  # noqa: ANN201
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import _common

    return _common


def update_after(steps: int) -> ClientUpdate:
    return ClientUpdate(0, Plan((0,)), {}, num_samples=64, metrics={"steps": float(steps)})


def test_work_done_follows_the_trainers_steps(common):
    train = TrainConfig(batch_size=16, max_steps=3)
    assert common.work_done(update_after(3), 64, train) == (3, 48), "3 steps of 16, not the epoch of 64"
    assert common.work_done(update_after(4), 60, TrainConfig(batch_size=16)) == (4, 60), "a short last batch"
    two_epochs = TrainConfig(batch_size=16, local_epochs=2)
    assert common.work_done(update_after(6), 40, two_epochs) == (6, 80)
    accumulated = TrainConfig(batch_size=8, grad_accum=2)  # a step is two micro-batches
    assert common.work_done(update_after(2), 40, accumulated) == (4, 32)
    assert "capped by the config: train.max_steps=3" in common.cap_note(64, train)
    assert common.cap_note(48, train).startswith("not capped")


def test_throughput_benchmark_counts_the_capped_work(tiny_config, tmp_path):
    config = tiny_config.model_copy(deep=True)
    config.train.max_steps = 2  # of the 3 steps of 8 in an epoch of 20 samples
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    script = BENCHMARKS / "throughput_vs_peft.py"
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    env["PYTHONPATH"] = str(Path(__import__("fedhello").__file__).parents[1])
    proc = subprocess.run(
        [sys.executable, str(script), "--config", str(path), "--samples", "20", "--repeats", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "capped by the config: train.max_steps=2 stops a client after 2 of 3 steps" in proc.stdout
    assert re.search(r"repetition 1: 16 samples each", proc.stdout), proc.stdout
