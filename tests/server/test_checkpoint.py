"""Checkpoints and exact resume: a run killed at any point and resumed ends bitwise identical (CPU) to an
uninterrupted run, with every log holding each round exactly once."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fedhello.aggregation.server_opt import ServerOptimizer
from fedhello.engines import ENGINES
from fedhello.errors import ConfigError, FedHelloError
from fedhello.rundir import CHECKPOINT_DIR
from fedhello.server.checkpoint import (
    STATE_FILE,
    _rng_snapshot,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def assert_same_run(resumed: Path, reference: Path) -> None:
    a, b = adapter(resumed), adapter(reference)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "final adapters differ"
    metrics = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in metrics] == [r["round"] for r in expected], "duplicated or missing rounds"
    for got, want in zip(metrics, expected, strict=True):
        assert (got["accuracy"], got["loss"], got["train_loss"]) == (want["accuracy"], want["loss"], want["train_loss"])
    for name in ("allocations.csv", "importance.jsonl"):  # importance only where the method scores layers
        if (reference / name).exists() or name == "allocations.csv":
            assert (resumed / name).read_text() == (reference / name).read_text(), name


def resumable_config(fast_config, rounds: int):  # noqa: ANN001, ANN201
    config = fast_config.model_copy(deep=True)
    config.federation.rounds = rounds
    config.checkpoint.every = 1
    return config


def resume_to(config, run_dir: Path, reference: Path, rounds: int):  # noqa: ANN001, ANN201
    """Resume `run_dir` (a finished run of `config`) to `rounds` rounds, run those rounds uninterrupted into
    `reference`, and require the two to be the same run; returns the longer config."""
    longer = config.model_copy(deep=True)
    longer.federation.rounds = rounds
    summary = ENGINES.get("local")().run(longer, run_dir, show_progress=False, resume=True)
    assert summary["resumed_from"] == config.federation.rounds
    ENGINES.get("local")().run(longer, reference, show_progress=False)
    assert_same_run(run_dir, reference)
    return longer


def test_sigkill_at_a_random_round_then_resume_is_bitwise_identical(fast_config, tmp_path, write_yaml, cli, cli_env):
    config = resumable_config(fast_config, rounds=4)
    path = write_yaml(config, tmp_path / "run.yaml")
    run_dir = tmp_path / "killed"
    rng = random.Random(20261128)
    kill_after, extra_delay = rng.randint(1, 2), rng.uniform(0.0, 0.5)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedhello.cli", "run", str(path), "--out", str(run_dir), "--no-progress", "--no-report"],
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    metrics = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= kill_after:
            time.sleep(extra_delay)  # land anywhere in the next round: training, FIM, logging or checkpointing
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it was killed: {proc.stderr.read()!r}"
    assert not (run_dir / "summary.json").exists()

    resumed = cli("run", "--resume", str(run_dir), "--no-progress", "--no-report")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds"] == 4 and kill_after <= summary["resumed_from"] <= 3

    reference = tmp_path / "reference"
    ENGINES.get("local")().run(config, reference, show_progress=False)
    assert_same_run(run_dir, reference)


def test_rounds_logged_after_the_checkpoint_are_dropped_and_a_run_can_be_extended(fast_config, tmp_path):
    config = resumable_config(fast_config, rounds=2)
    run_dir = tmp_path / "run"
    ENGINES.get("local")().run(config, run_dir, show_progress=False)
    # a crash after logging round 3 but before its checkpoint, mid-way through a line
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"round": 3, "accuracy": 0.9}\n{"round": 4, "acc')
    with (run_dir / "allocations.csv").open("a") as f:
        f.write("3,1,0,0\n")
    with (run_dir / "importance.jsonl").open("a") as f:
        f.write('{"round": 3}\n')
    (run_dir / CHECKPOINT_DIR / ".state.json.tmp").write_text("{half")  # a torn temporary file is ignored

    longer = resumable_config(fast_config, rounds=3)  # more rounds is a harmless change
    summary = ENGINES.get("local")().run(longer, run_dir, show_progress=False, resume=True)
    assert summary["resumed_from"] == 2 and summary["rounds"] == 3
    reference = tmp_path / "reference"
    ENGINES.get("local")().run(longer, reference, show_progress=False)
    assert_same_run(run_dir, reference)
    files = sorted(p.name for p in (run_dir / CHECKPOINT_DIR).iterdir() if not p.name.startswith("."))
    assert files == ["adapter-000003.safetensors", STATE_FILE], "superseded checkpoint files are removed"


def test_resume_between_fim_refreshes_restores_the_held_probabilities(fast_config, tmp_path):
    """Rounds 3 and 4 neither refresh FIM (refreshes at 2, 5, ...) nor start fresh: they draw layers with
    the probabilities estimated in round 2, which only the checkpoint's allocator state carries over."""
    config = resumable_config(fast_config, rounds=2)
    config.federation.clients_per_round = 6  # four budget-limited draws per round
    config.strategy.fim_warmup, config.strategy.fim_every, config.strategy.fim_hold = 1, 3, True
    run_dir = tmp_path / "run"
    ENGINES.get("local")().run(config, run_dir, show_progress=False)
    reference = tmp_path / "reference"
    longer = resume_to(config, run_dir, reference, rounds=4)
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["importance_refresh"] for r in records] == [False, True, False, False]

    # the check can fail: an allocator without the held probabilities (what skipping its restore leaves)
    # falls back to the warm-up pattern and allocates rounds 3 and 4 differently
    forgetful = longer.model_copy(deep=True)
    forgetful.strategy.fim_hold = False
    forgetful.output.save_adapter = False
    ENGINES.get("local")().run(forgetful, tmp_path / "forgetful", show_progress=False)

    def after_resume(run: Path) -> list[str]:
        return [row for row in (run / "allocations.csv").read_text().splitlines() if row.split(",")[0] in {"3", "4"}]

    assert after_resume(tmp_path / "forgetful") != after_resume(reference)


def test_a_resumed_fed_pilot_run_equals_an_uninterrupted_one(fast_config, tmp_path):
    """Fed-pilot's aggregator carries per-tensor update counts across rounds (its step multipliers follow them),
    so a resume that dropped them -- not loaded by the resume, or reset by `load_state_dict` -- would aggregate
    rounds 3 and 4 with the counts of those rounds alone and end with another adapter."""
    from fedhello.methods.base import method_config

    tree = resumable_config(fast_config, rounds=2).model_dump(mode="json")
    config = method_config(tree, "fed-pilot")
    run_dir = tmp_path / "run"
    ENGINES.get("local")().run(config, run_dir, show_progress=False)
    saved = json.loads((run_dir / CHECKPOINT_DIR / STATE_FILE).read_text())
    assert saved["aggregator"]["counts"], "the checkpoint carries the counts"
    reference = tmp_path / "reference"
    resume_to(config, run_dir, reference, rounds=4)


def test_a_resumed_fedadam_run_equals_an_uninterrupted_one(fast_config, tmp_path, monkeypatch):
    """FedAdam's moments (and per-entry step counts) are server state: a resume that lost them would restart the
    optimizer from zero moments and end with another adapter. On Multi-Krum with a hostile client, so the round
    records also carry the robust rule's notes and the hostile marks of a real run."""
    config = resumable_config(fast_config, rounds=2)
    config.aggregation.name, config.aggregation.byzantine = "multi_krum", 0
    config.aggregation.server_optimizer = "fedadam"
    config.attack.hostile_ids, config.attack.kind = [1], "sign_flip"
    run_dir = tmp_path / "run"
    ENGINES.get("local")().run(config, run_dir, show_progress=False)
    saved = json.loads((run_dir / CHECKPOINT_DIR / STATE_FILE).read_text())
    moments = saved["aggregator"]["moments"]
    assert moments and all(set(m) == {"m", "v", "t"} and "$tensor" in m["v"] for m in moments.values())
    forgetful = tmp_path / "forgetful"
    shutil.copytree(run_dir, forgetful)
    reference = tmp_path / "reference"
    longer = resume_to(config, run_dir, reference, rounds=4)
    # the check can fail: a resume that does not restore the optimizer's moments ends with another adapter
    monkeypatch.setattr(ServerOptimizer, "load_state_dict", lambda self, state: None)
    ENGINES.get("local")().run(longer, forgetful, show_progress=False, resume=True)
    lost, kept = adapter(forgetful), adapter(reference)
    assert any(not torch.equal(lost[k], kept[k]) for k in kept)
    records = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    clients = [c for r in records for c in r["clients"]]
    assert {c["id"] for c in clients if c.get("hostile")} == {1}
    assert any(w.startswith("multi_krum: coordinate-wise median") for r in records for w in r["warnings"])


def test_a_resumed_ard_lora_run_equals_an_uninterrupted_one(fast_config, tmp_path):
    """ARD-LoRA's gates live for one client's round (folded into the upload), its allocator and SVD aggregator
    carry nothing across rounds: a resume continues from the checkpointed adapter alone, and clients really send
    lower effective ranks (the validator accepts them)."""
    from fedhello.methods.base import method_config

    tree = resumable_config(fast_config, rounds=1).model_dump(mode="json")
    config = method_config(tree, "ard-lora")
    config.strategy.l1 = (
        1e-3  # on the tiny model l1 outweighs the task: gates fall under the threshold, pairs are pruned
    )
    run_dir = tmp_path / "run"
    ENGINES.get("local")().run(config, run_dir, show_progress=False)
    reference = tmp_path / "reference"
    resume_to(config, run_dir, reference, rounds=2)
    clients = [
        c for line in (reference / "metrics.jsonl").read_text().splitlines() for c in json.loads(line)["clients"]
    ]
    assert clients and all(c["mean_rank"] >= 1 for c in clients)
    assert any(c["pruned_components"] > 0 for c in clients), "some components were dropped"
    assert all(not c.get("rejected") for c in clients)


def test_resume_before_the_first_checkpoint_restarts_cleanly(fast_config, tmp_path):
    config = resumable_config(fast_config, rounds=1)
    config.checkpoint.every = 0  # never checkpointed: resuming starts from round 1 with empty logs
    run_dir = tmp_path / "run"
    ENGINES.get("local")().run(config, run_dir, show_progress=False)
    summary = ENGINES.get("local")().run(config, run_dir, show_progress=False, resume=True)
    assert summary["resumed_from"] == 0
    assert [json.loads(line)["round"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1]
    assert (run_dir / "allocations.csv").read_text().startswith("round,client,tier,layers\n")


def test_checkpoint_roundtrip_and_rng_states(fast_config, tmp_path):
    state = {"w": torch.randn(3, 4), "h": torch.arange(6, dtype=torch.float32)}
    torch.manual_seed(5)
    np.random.seed(6)
    random.seed(7)
    save_checkpoint(tmp_path, 4, fast_config, state, {"probabilities": np.array([0.5, 0.5])}, [0, 1, 2])
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    checkpoint = load_checkpoint(tmp_path)
    restore_rng(checkpoint)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])
    assert [random.random() for _ in range(3)] == expected[2]
    assert checkpoint.round == 4 and checkpoint.client_tiers == [0, 1, 2]
    assert checkpoint.allocator_state == {"probabilities": [0.5, 0.5]}
    assert all(torch.equal(checkpoint.global_state[k], v) for k, v in state.items())
    assert set(_rng_snapshot()[0]) >= {"rng/torch", "rng/numpy"}
    # no pickle anywhere: the state file is JSON and the tensors are safetensors
    json.loads((tmp_path / CHECKPOINT_DIR / STATE_FILE).read_text())


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda d: (d / STATE_FILE).write_text("{not json"), "unreadable"),
        (lambda d: (d / STATE_FILE).write_text('{"round": 1}'), "not a fedhello checkpoint"),
        (lambda d: next(d.glob("adapter-*")).write_bytes(b"\x00" * 12), "unreadable"),
        (lambda d: next(d.glob("adapter-*")).unlink(), "unreadable"),
    ],
    ids=["state not json", "state incomplete", "adapter garbage", "adapter missing"],
)
def test_damaged_checkpoints_are_refused_in_one_line(fast_config, tmp_path, damage, words):
    save_checkpoint(tmp_path, 1, fast_config, {"w": torch.zeros(2)}, {}, [0])
    damage(tmp_path / CHECKPOINT_DIR)
    with pytest.raises(FedHelloError) as info:
        load_checkpoint(tmp_path)
    assert words in str(info.value) and "\n" not in str(info.value) and "--resume" in str(info.value)


def test_resume_refuses_a_different_config_but_allows_harmless_changes(fast_config, tmp_path):
    from fedhello.server.resume import check_resumable

    save_checkpoint(tmp_path, 2, fast_config, {"w": torch.zeros(2)}, {}, [0, 1])
    checkpoint = load_checkpoint(tmp_path)
    harmless = fast_config.model_copy(deep=True)
    harmless.federation.rounds = 9
    harmless.output.plot = True
    harmless.checkpoint.every = 3
    check_resumable(checkpoint, harmless, [0, 1])
    changed = fast_config.model_copy(deep=True)
    changed.train.lr = 0.5
    with pytest.raises(ConfigError, match="'train.lr'.*checkpoint was written with 0.03"):
        check_resumable(checkpoint, changed, [0, 1])
    shorter = fast_config.model_copy(deep=True)
    shorter.federation.rounds = 1
    with pytest.raises(ConfigError, match="federation.rounds"):
        check_resumable(checkpoint, shorter, [0, 1])
    with pytest.raises(FedHelloError, match="tier assignment"):
        check_resumable(checkpoint, fast_config, [1, 0])
