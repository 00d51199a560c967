"""Malformed configs and inputs, through the command line: each one exits with code 2 and one line on
stderr that names the offending field (and the fix), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
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
    ("unknown aggregator", setting("aggregation.name", "geometric_median"), [], "'aggregation.name'", "fedavg"),
    ("unknown pattern", setting("strategy.pattern", "diamond"), [], "'strategy.pattern'", "bottleneck"),
    ("unknown partitioner", setting("partition.kind", "zipf"), [], "partition.kind", "zipf"),
    ("unknown task", setting("task", "translation"), [], "'task'", "unknown task"),
    ("clients per round > clients", setting("federation.clients_per_round", 50), [], "clients_per_round", "larger"),
    ("missing data path", setting("data.path", "/nonexistent/fedhello-data"), [], "'data.path'", "not found"),
    ("unknown data source", setting("data.source", "ftp"), [], "'data.source'", "unknown source"),
    ("missing label column", setting("data.label_column", "topic"), [], "'data.label_column'",
     "(fix: set data.label_column to the column of the labels)"),
    ("missing model folder", setting("model.name_or_path", "/nonexistent/model"), [], "'model.name_or_path'",
     "'/nonexistent/model' not found"),
    ("dropout out of range", setting("reliability.dropout", 1.5), [], "'reliability.dropout'", "less than 1"),
    ("unknown on_too_few", setting("reliability.on_too_few", "panic"), [], "'reliability.on_too_few'", "retry"),
    ("min_clients > per round", setting("reliability.min_clients", 9), [], "'reliability.min_clients'", "larger"),
    ("negative norm bound", setting("reliability.norm_bound", -1), [], "'reliability.norm_bound'", "greater than 0"),
    ("negative checkpoint interval", setting("checkpoint.every", -1), [], "'checkpoint.every'", "greater than"),
    ("override without =", edit(lambda t: None), ["--set", "train.lr"], "'train.lr'", "key=value"),
    ("override into a leaf", edit(lambda t: None), ["--set", "train.lr.x=1"], "'train.lr.x'", "not a section"),
    # issue 23: a malformed value is the user's mistake, not a bug in fedhello (exit 2, no traceback file)
    ("override value not YAML", edit(lambda t: None), ["--set", "tiers=[{share: 1/3"], "'--set'",
     "the value of 'tiers=[{share: 1/3' is not valid YAML"),
    ("override without a key", edit(lambda t: None), ["--set", "=5"], "'--set'", "write key=value"),
    ("unknown engine", edit(lambda t: None), ["--engine", "carrier-pigeon"], "'--engine'", "local"),
    # strategy / aggregator / option pairings that cannot give a true result (issue 12)
    ("rank allocator with fedavg", edit(lambda t: t.update(strategy={"name": "legend"})), [], "'aggregation.name'",
     "rank_fedavg"),
    ("tier ranks with fedavg", edit(lambda t: t.update(strategy={"name": "tier_rank"})), [], "'aggregation.name'",
     "rank-truncated"),
    ("ffa with hetlora", edit(lambda t: t.update(strategy={"name": "ffa"}, aggregation={"name": "hetlora"})), [],
     "'aggregation.name'", "one-factor"),
    ("hetlora with fedavg", edit(lambda t: t.update(strategy={"name": "hetlora", "self_prune_threshold": 0.1})), [],
     "'aggregation.name'", "hetlora"),
    ("an option of another strategy", edit(lambda t: t.update(strategy={"name": "fill", "pattern": "uniform"})), [],
     "'strategy.pattern'", "option of gd"),
    ("importance without proxy set", setting("data.proxy_size", 0), [], "'data.proxy_size'", "Fisher"),
    ("exclusive without a full tier", edit(lambda t: t.update(strategy={"name": "exclusive"}) or
                                           t["tiers"][2].update(layers=3)), [], "'tiers'", "all 4 layers"),
    ("unknown rank scaling", edit(lambda t: t.update(strategy={"name": "hetlora", "rank_scaling": "double"})), [],
     "'strategy.rank_scaling'", "per_rank"),
    ("self-prune ratio of 1", edit(lambda t: t.update(strategy={"name": "hetlora", "self_prune_ratio": 1.0})), [],
     "'strategy.self_prune_ratio'", "less than 1"),
    # every field of data: (values that are wrong on their own; files and columns below and in DATA_FILE_CASES)
    ("subset not a string", setting("data.subset", [1]), [], "'data.subset'", "string"),
    ("text column not text", setting("data.text_column", "label"), [], "'data.text_column'", "not text"),
    ("missing text column", setting("data.text_column", "body"), [], "'data.text_column'",
     "column 'body' not in '{data}' (its columns: text, label) (fix: set data.text_column to the column of the texts)"),
    ("test share of 1", setting("data.test_size", 1.0), [], "'data.test_size'", "less than 1"),
    ("negative proxy size", setting("data.proxy_size", -1), [], "'data.proxy_size'", "greater than or equal to 0"),
    ("zero train samples", setting("data.max_train_samples", 0), [], "'data.max_train_samples'", "greater than 0"),
    ("zero test samples", setting("data.max_test_samples", 0), [], "'data.max_test_samples'", "greater than 0"),
    ("image column not a string", setting("data.image_column", 3), [], "'data.image_column'", "string"),
    ("instruction column not a string", setting("data.instruction_column", [1]), [], "'data.instruction_column'",
     "string"),
    ("context column not a string", setting("data.context_column", {}), [], "'data.context_column'", "string"),
    ("response column not a string", setting("data.response_column", 2), [], "'data.response_column'", "string"),
    ("negative generate samples", setting("data.max_generate_samples", -1), [], "'data.max_generate_samples'",
     "greater than or equal to 0"),
    ("unknown encoding", setting("data.encoding", "latin-l"), [], "'data.encoding'", "latin-1"),
    ("empty csv delimiter", setting("data.csv_delimiter", ""), [], "'data.csv_delimiter'", "at least 1"),
    ("long csv quote", setting("data.csv_quotechar", "''"), [], "'data.csv_quotechar'", "at most 1"),
    ("unknown csv quoting", setting("data.csv_quoting", "sometimes"), [], "'data.csv_quoting'", "minimal"),
    ("unknown bad-label rule", setting("data.bad_labels", "ignore"), [], "'data.bad_labels'", "drop"),
    # every field of model:
    ("model not a string", setting("model.name_or_path", 5), [], "'model.name_or_path'", "string"),
    ("zero max length", setting("model.max_length", 0), [], "'model.max_length'", "greater than 0"),
    ("zero new tokens", setting("model.max_new_tokens", 0), [], "'model.max_new_tokens'", "greater than 0"),
    # privacy and secure aggregation: what they cannot protect, and budgets
    ("privacy on a non-average", edit(lambda t: t.update(privacy={"mode": "server"}, aggregation={"name": "flexlora"})),
     [], "'privacy.mode'", "fedavg"),
    ("privacy with sample weights", edit(lambda t: t.update(privacy={"mode": "server"},
     aggregation={"weighting": "samples"})), [], "'aggregation.weighting'", "use uniform"),
    ("privacy budget overspent", setting("privacy", {"mode": "server", "noise_multiplier": 1, "max_epsilon": 1}), [],
     "'privacy.max_epsilon'", "on_exhausted: stop"),
    ("adaptive clip with too little count noise", setting("privacy", {"mode": "server", "adaptive_clip": True}), [],
     "'privacy.clipped_count_stddev'", "above 0.5"),
    ("secure with server-side privacy", edit(lambda t: t.update(privacy={"mode": "server"}, secure={"enabled": True})),
     [], "'privacy.mode'", "client"),
]


@pytest.fixture
def tree(tiny_config: RunConfig) -> Tree:
    data = tiny_config.model_dump(mode="json")
    data["output"]["plot"] = False
    return data


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[list[str]], tuple[int, str]]:
    """Run the CLI in-process (fast); returns the exit code and stderr. An exception escaping the command
    would be a traceback for a user, so it fails the test."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # a missing local path must not turn into a hub download
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # error logs of runs without a folder
    (tmp_path / "tmp").mkdir()
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
    assert_one_line_error(code, stderr, field, words.replace("{data}", str(tree["data"]["path"])))
    if not (tmp_path / "run").exists():  # refused before a run folder: nothing is left behind
        assert not (tmp_path / "tmp" / "fedhello-errors").exists()


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


# ---- data and model files a user points at: every failure while loading them is one line (issue 12) ----

ROWS = [("très bon café", "positive"), ("mauvais élève", "negative"), ("ça va", "neutral")] * 20


def _csv(directory: Path, text: str, encoding: str = "utf-8", name: str = "reviews.csv") -> Path:
    path = directory / name
    path.write_bytes(text.encode(encoding))
    return path


def latin1_csv(d: Path) -> dict[str, Any]:
    body = "text,label\n" + "".join(f'"{t} {i}",{lab}\n' for i, (t, lab) in enumerate(ROWS))
    return {"data.path": str(_csv(d, body, "latin-1"))}


def semicolon_csv(d: Path) -> dict[str, Any]:
    body = "text;label\n" + "".join(f"{t} {i};{lab}\n" for i, (t, lab) in enumerate(ROWS))
    return {"data.path": str(_csv(d, body))}


def unclosed_quote_csv(d: Path) -> dict[str, Any]:
    body = "text,label\n" + "".join(f"{t} {i},{lab}\n" for i, (t, lab) in enumerate(ROWS)) + '"never closed,x\n'
    return {"data.path": str(_csv(d, body))}


def empty_text_csv(d: Path) -> dict[str, Any]:
    body = "text,label\n" + "".join(f"{t} {i},{lab}\n" for i, (t, lab) in enumerate(ROWS)) + ",positive\n"
    return {"data.path": str(_csv(d, body))}


def missing_label_csv(d: Path) -> dict[str, Any]:
    body = "text,label\n" + "".join(f"{t} {i},{lab}\n" for i, (t, lab) in enumerate(ROWS)) + "no label,\n"
    return {"data.path": str(_csv(d, body))}


def not_json(d: Path) -> dict[str, Any]:
    return {"data.path": str(_csv(d, '{"text": "a", "label": 1}\n{oops\n', name="reviews.jsonl"))}


def not_parquet(d: Path) -> dict[str, Any]:
    return {"data.path": str(_csv(d, "this is not parquet", name="reviews.parquet"))}


def torn_saved_dataset(d: Path) -> dict[str, Any]:
    (d / "saved").mkdir()
    (d / "saved" / "dataset_info.json").write_text("{}")
    return {"data.path": str(d / "saved")}


def too_few_samples(d: Path) -> dict[str, Any]:
    """Eight training samples: no proxy set can be held out for the Fisher importance (fim+gd)."""
    body = "text,label\n" + "".join(f"{t} {i},{lab}\n" for i, (t, lab) in enumerate(ROWS[:12]))
    return {"data.path": str(_csv(d, body)), "data.test_size": 0.34, "partition.kind": "iid",
            "federation.num_clients": 2, "federation.clients_per_round": 1, "reliability.min_clients": 1}


def not_a_class_folder(d: Path) -> dict[str, Any]:
    return {"data.source": "folders", "data.path": str(_csv(d, "x"))}


def dolly_file(d: Path, **columns: str) -> dict[str, Any]:
    """A Dolly-15K style jsonl file, with `columns` (e.g. instruction_column) pointed at the wrong name."""
    from fedhello.testing.datasets import dolly_like

    dolly_like(24).to_json(str(d / "dolly.jsonl"))
    return {"data.source": "dolly", "data.path": str(d / "dolly.jsonl"), **{f"data.{k}": v for k, v in columns.items()}}


def own_instructions(d: Path, **changes: Any) -> dict[str, Any]:  # noqa: ANN401
    """The user's own instruction file (instruction, response; no context, no label column), with `changes`."""
    rows = [{"instruction": f"say {i}", "response": f"{i}"} for i in range(24)]
    (d / "mine.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"data.source": "instructions", "data.path": str(d / "mine.jsonl"), **changes}


def empty_model_folder(d: Path) -> dict[str, Any]:
    (d / "model").mkdir()
    return {"model.name_or_path": str(d / "model")}


def model_without_weights(d: Path, tiny_model_dir: Path) -> dict[str, Any]:
    (d / "model").mkdir()
    for file in tiny_model_dir.iterdir():
        if "safetensors" not in file.name and not file.name.endswith(".bin"):
            (d / "model" / file.name).write_bytes(file.read_bytes())
    return {"model.name_or_path": str(d / "model")}


def torn_model_config(d: Path, tiny_model_dir: Path) -> dict[str, Any]:
    (d / "model").mkdir()
    for file in tiny_model_dir.iterdir():
        (d / "model" / file.name).write_bytes(file.read_bytes())
    (d / "model" / "config.json").write_text('{"model_type": "bert", "hidden_size": ')
    return {"model.name_or_path": str(d / "model")}


DATA_FILE_CASES = [
    ("latin-1 csv read as utf-8", latin1_csv, "'data.encoding'", "latin-1"),
    ("csv with another delimiter", semicolon_csv, "'data.text_column'", "data.csv_delimiter"),
    ("csv with an unclosed quote", unclosed_quote_csv, "'data.csv_delimiter'", "csv_quotechar"),
    ("csv row without text", empty_text_csv, "'data.text_column'", "no 'text'"),
    ("csv row without label", missing_label_csv, "'data.label_column'", "no 'label'"),
    ("json lines that are not json", not_json, "'data.path'", "reviews.jsonl"),
    ("parquet that is not parquet", not_parquet, "'data.path'", "reviews.parquet"),
    ("torn save_to_disk folder", torn_saved_dataset, "'data.path'", "saved"),
    ("too few samples for a proxy set", too_few_samples, "'data.proxy_size'", "Fisher"),
    ("folders source on a file", not_a_class_folder, "'data.path'", "not a folder"),
    ("a path bbc_news would ignore", lambda d: {"data.source": "bbc_news", "data.path": str(_csv(d, "text,label\n"))},
     "'data.path'", "ignored by data.source 'bbc_news'"),
    ("instruction column not in the file", lambda d: dolly_file(d, instruction_column="prompt"),
     "'data.instruction_column'", "prompt"),
    ("context column not in the file", lambda d: dolly_file(d, context_column="input"), "'data.context_column'",
     "input"),
    ("response column not in the file", lambda d: dolly_file(d, response_column="answer"),
     "'data.response_column'", "answer"),
    # own instruction data (issue 23): no context column, no label column for a label-skew partition
    ("own instructions without a context column", own_instructions, "'data.context_column'",
     "(its columns: instruction, response) (fix: set data.context_column to the column of the instructions' "
     "context (or null when there is none))"),
    ("own instructions split by label", lambda d: own_instructions(d, **{"data.context_column": None,
                                                                        "partition.kind": "pathological"}),
     "'partition.kind'", "has no label column 'label' (its columns: instruction, response) (fix: use a "
     "partition.kind that needs no labels (domain, iid)"),
    ("empty model folder", empty_model_folder, "'model.name_or_path'", "cannot load"),
    ("model folder without weights", model_without_weights, "'model.name_or_path'", "cannot load"),
    ("model folder with a torn config", torn_model_config, "'model.name_or_path'", "cannot load"),
]


@pytest.mark.parametrize(("case", "make", "field", "words"), DATA_FILE_CASES, ids=[c[0] for c in DATA_FILE_CASES])
def test_bad_data_and_model_files(case, make, field, words, tree, invoke, tmp_path, tiny_model_dir):
    files = tmp_path / "files"
    files.mkdir()
    needs_model = "tiny_model_dir" in make.__code__.co_varnames
    changes = make(files, tiny_model_dir) if needs_model else make(files)
    for dotted, value in changes.items():
        tree = setting(dotted, value)(tree)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tree))
    out = tmp_path / "run"
    code, stderr = invoke([str(path), "--out", str(out)])
    assert_one_line_error(code, stderr, field, words)
    if out.is_dir():  # the run folder keeps the traceback for a bug report
        assert "Traceback" in (out / "error.log").read_text()


def test_real_world_csv_options_load(tmp_path):
    """The fix the encoding error names works: a latin-1, semicolon-separated, single-quoted CSV loads."""
    from fedhello.config import DataConfig
    from fedhello.data import load_source

    body = "text;label\n" + "".join(f"'{t}; n° {i}';{lab}\n" for i, (t, lab) in enumerate(ROWS))
    path = _csv(tmp_path, body, "latin-1")
    cfg = DataConfig(source="hf", path=str(path), encoding="latin-1", csv_delimiter=";", csv_quotechar="'")
    splits = load_source(cfg, seed=0)
    texts = set(splits["train"]["text"]) | set(splits["test"]["text"])
    assert "très bon café; n° 0" in texts and len(texts) == len(ROWS)
    assert splits["train"].features["label"].names == ["negative", "neutral", "positive"]


# ---- no traceback for anything: an unexpected exception is a one-line bug report pointer ----


def _boom(*args: Any, **kwargs: Any) -> None:
    raise ZeroDivisionError("model went to infinity")


def test_unexpected_error_is_one_line_pointing_at_its_traceback(tree, invoke, tmp_path, monkeypatch):
    from fedhello.engines.local import LocalEngine

    monkeypatch.setattr(LocalEngine, "run", _boom)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    code, stderr = invoke([str(path), "--out", str(tmp_path / "run")])
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("run folder: ")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert "ZeroDivisionError" in lines[0] and "bug" in lines[0] and str(tmp_path / "run" / "error.log") in lines[0]
    log = (tmp_path / "run" / "error.log").read_text()
    assert "Traceback" in log and "model went to infinity" in log and "_boom" in log


def test_unexpected_error_before_the_run_folder_goes_to_a_temp_log(tree, invoke, tmp_path, monkeypatch):
    import fedhello.config

    monkeypatch.setattr(fedhello.config, "load_config", _boom)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    code, stderr = invoke([str(path)])
    (line,) = [line for line in stderr.splitlines() if line.strip()]
    assert code == 1 and "bug" in line and "Traceback" not in stderr
    (log,) = (tmp_path / "tmp" / "fedhello-errors").glob("*.log")
    assert str(log) in line and "ZeroDivisionError" in log.read_text()


def test_latin1_csv_in_a_real_process(tree, tmp_path):
    """What the user saw: `fedhello run` on a latin-1 CSV printed an 891-line traceback from `datasets`."""
    for dotted, value in latin1_csv(tmp_path).items():
        tree = setting(dotted, value)(tree)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1", "TMPDIR": str(tmp_path)}
    command = [sys.executable, "-m", "fedhello.cli", "run", str(path), "--out", str(tmp_path / "run"), "--no-progress"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert_one_line_error(proc.returncode, proc.stderr, "'data.encoding'", "latin-1")


def test_resume_says_which_round_it_continues_from(checkpointed_run, invoke):
    """Before it trains, a resumed run says where it picks up (issue 23, item 8): the checkpoint holds round 2."""
    code, stderr = invoke(["--resume", str(checkpointed_run)])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[0] == f"resuming {checkpointed_run} from round 3 of 3", stderr
    # this checkpoint's adapter is a stand-in: the run then stops in one line
    assert code == 2 and "Traceback" not in stderr


def test_resuming_a_finished_run_says_there_is_nothing_left(checkpointed_run):
    from fedhello.config import load_config
    from fedhello.server.resume import resume_message

    config = load_config(checkpointed_run / "config.yaml", ["federation.rounds=2"])
    assert resume_message(checkpointed_run, config) == (
        f"{checkpointed_run} has finished its 2 rounds: writing its results again (to train more: --set "
        "federation.rounds=N)"
    )
