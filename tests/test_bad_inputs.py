"""Malformed configs and inputs, through the command line: each one exits with code 2 and one line on
stderr that names the offending field (and the fix), never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from fedhello.cli import app
from fedhello.config import RunConfig, config_from_dict, dump_config
from fedhello.rundir import CHECKPOINT_DIR
from fedhello.server.checkpoint import STATE_FILE, save_checkpoint

Tree = dict[str, Any]


def edit(change: Callable[[Tree], None]) -> Callable[[Tree], Tree]:
    def apply(tree: Tree) -> Tree:
        change(tree)
        return tree

    return apply


def setting(dotted: str, value: Any) -> Callable[[Tree], Tree]:  # noqa: ANN401
    def change(tree: Tree) -> None:
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        node[leaf] = value

    return edit(change)


# (id, how the tiny config tree is broken, extra CLI args, field named in the error, words in the error)
CONFIG_CASES = [
    ("unknown top-level key", setting("trian", {}), [], "'trian'", "unknown key"),
    ("unknown nested key", setting("train.learning_rate", 0.1), [], "'train.learning_rate'", "unknown key"),
    ("wrong type float", setting("train.lr", "fast"), [], "'train.lr'", "number"),
    ("wrong type int", setting("federation.rounds", "many"), [], "'federation.rounds'", "integer"),
    ("non-positive batch", setting("train.batch_size", 0), [], "'train.batch_size'", "greater than 0"),
    ("shares not summing to 1", setting("tiers.0.share", 0.5), [], "'tiers'", "sum to"),
    ("share not a fraction", setting("tiers.0.share", "a/b"), [], "'tiers.0.share'", "fraction"),
    ("tier without layers", edit(lambda t: t["tiers"][0].pop("layers")), [], "'tiers.0", "layers"),
    ("more layers than the model", setting("tiers.2.layers", 9), [], "'tiers.2.layers'", "at most 4"),
    ("unknown strategy", setting("strategy.name", "magic"), [], "'strategy.name'", "fim+gd"),
    ("unknown aggregator", setting("aggregation.name", "median"), [], "'aggregation.name'", "fedavg"),
    ("unknown pattern", setting("strategy.pattern", "diamond"), [], "'strategy.pattern'", "bottleneck"),
    ("unknown partitioner", setting("partition.kind", "zipf"), [], "partition.kind", "zipf"),
    ("unknown task", setting("task", "translation"), [], "'task'", "unknown task"),
    ("clients per round > clients", setting("federation.clients_per_round", 50), [], "clients_per_round", "larger"),
    ("missing data path", setting("data.path", "/nonexistent/fedhello-data"), [], "'data.path'", "not a local path"),
    ("unknown data source", setting("data.source", "ftp"), [], "'data.source'", "unknown source"),
    ("missing label column", setting("data.label_column", "topic"), [], "'data.label_column'", "topic"),
    ("missing model folder", setting("model.name_or_path", "/nonexistent/model"), [], "'model.name_or_path'", "exist"),
    ("dropout out of range", setting("reliability.dropout", 1.5), [], "'reliability.dropout'", "less than 1"),
    ("unknown on_too_few", setting("reliability.on_too_few", "panic"), [], "'reliability.on_too_few'", "retry"),
    ("min_clients > per round", setting("reliability.min_clients", 9), [], "'reliability.min_clients'", "larger"),
    ("negative norm bound", setting("reliability.norm_bound", -1), [], "'reliability.norm_bound'", "greater than 0"),
    ("negative checkpoint interval", setting("checkpoint.every", -1), [], "'checkpoint.every'", "greater than"),
    ("override without =", edit(lambda t: None), ["--set", "train.lr"], "'train.lr'", "key=value"),
    ("override into a leaf", edit(lambda t: None), ["--set", "train.lr.x=1"], "'train.lr.x'", "not a section"),
    ("unknown engine", edit(lambda t: None), ["--engine", "carrier-pigeon"], "'--engine'", "local"),
]


@pytest.fixture
def tree(tiny_config: RunConfig) -> Tree:
    data = tiny_config.model_dump(mode="json")
    data["output"]["plot"] = False
    return data


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], tuple[int, str]]:
    """Run the CLI in-process (fast); returns the exit code and stderr. An exception escaping the command
    would be a traceback for a user, so it fails the test."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # a missing local path must not turn into a hub download
    runner = CliRunner()

    def run(args: list[str]) -> tuple[int, str]:
        result = runner.invoke(app, ["run", *args, "--no-progress", "--no-report"])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}")
        return result.exit_code, result.stderr

    return run


def assert_one_line_error(code: int, stderr: str, field: str, words: str) -> None:
    # errors found while building the run (model, data) follow the "run folder: ..." notice printed first
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("run folder: ")]
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and lines[0].startswith("error:")
    assert field in lines[0] and words in lines[0], lines[0]


@pytest.mark.parametrize(("case", "break_it", "args", "field", "words"), CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_malformed_config(case, break_it, args, field, words, tree, invoke, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(break_it(tree)))
    code, stderr = invoke([str(path), "--out", str(tmp_path / "run"), *args])
    assert_one_line_error(code, stderr, field, words)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


FILE_CASES = [
    ("config file missing", lambda d: [str(d / "missing.yaml")], "'CONFIG'", "does not exist"),
    ("config not YAML", lambda d: [str(_write(d, "c.yaml", "train: [unclosed\n"))], "'CONFIG'", "not valid YAML"),
    ("config not a mapping", lambda d: [str(_write(d, "c.yaml", "- 1\n- 2\n"))], "'CONFIG'", "mapping"),
    ("base includes itself", lambda d: [str(_write(d, "c.yaml", "base: c.yaml\n"))], "'base'", "itself"),
    ("no config and no resume", lambda d: [], "'CONFIG'", "--resume"),
]


@pytest.mark.parametrize(("case", "args", "field", "words"), FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_malformed_input_files(case, args, field, words, invoke, tmp_path):
    code, stderr = invoke(args(tmp_path))
    assert_one_line_error(code, stderr, field, words)


@pytest.fixture
def checkpointed_run(tiny_config: RunConfig, tmp_path: Path) -> Path:
    """A run folder as a run leaves it after round 2: resolved config plus a checkpoint."""
    run_dir = tmp_path / "interrupted"
    run_dir.mkdir()
    dump_config(tiny_config, run_dir / "config.yaml")
    save_checkpoint(run_dir, 2, tiny_config, {"w": torch.zeros(3)}, {}, [0, 1, 2, 0, 1, 2])
    return run_dir


def _damage_state(run_dir: Path) -> list[str]:
    (run_dir / CHECKPOINT_DIR / STATE_FILE).write_text("{torn")
    return ["--resume", str(run_dir)]


def _other_config(run_dir: Path) -> list[str]:
    changed = config_from_dict({**yaml.safe_load((run_dir / "config.yaml").read_text()), "seed": 4})
    dump_config(changed, run_dir.parent / "other.yaml")
    return [str(run_dir.parent / "other.yaml"), "--resume", str(run_dir)]


RESUME_CASES = [
    ("resume a non-run folder", lambda d: ["--resume", str(d.parent / "nothing")], "'--resume'", "not a run folder"),
    ("resume unreadable checkpoint", _damage_state, "'--resume'", "unreadable"),
    ("resume with changed --set", lambda d: ["--resume", str(d), "--set", "train.lr=0.5"], "'train.lr'", "0.03"),
    ("resume with another config", _other_config, "'seed'", "checkpoint was written with 3"),
    ("resume below its round", lambda d: ["--resume", str(d), "--set", "federation.rounds=1"], "rounds", "at least 2"),
    (
        "resume into another --out",
        lambda d: ["--resume", str(d), "--out", str(d.parent / "x")],
        "'--out'",
        "own folder",
    ),
]


@pytest.mark.parametrize(("case", "args", "field", "words"), RESUME_CASES, ids=[c[0] for c in RESUME_CASES])
def test_bad_resume(case, args, field, words, checkpointed_run, invoke):
    code, stderr = invoke(args(checkpointed_run))
    assert_one_line_error(code, stderr, field, words)


def test_bad_resume_in_a_real_process(checkpointed_run):
    """The same contract when a user runs the installed command (no test runner around it)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "fedhello.cli", "run", "--resume", str(checkpointed_run), "--set", "seed=9"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert_one_line_error(proc.returncode, proc.stderr, "'seed'", "checkpoint was written with 3")
