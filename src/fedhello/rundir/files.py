"""Run-folder file names, the atomic write, the tolerant readers, and cutting the logs back on resume."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from fedhello.config import RunConfig
from fedhello.errors import FedHelloError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
ALLOCATIONS_FILE = "allocations.csv"
IMPORTANCE_FILE = "importance.jsonl"
SUMMARY_FILE = "summary.json"
PARTITION_FILE = "partition.json"
ADAPTER_DIR = "adapter"
# in ADAPTER_DIR: the run's class names in label-id order (what `fedhello export` writes into config.json)
ADAPTER_LABELS_FILE = "labels.json"
ACCURACY_PLOT = "accuracy.png"
CHECKPOINT_DIR = "checkpoint"
REPORT_DIR = "report"
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
FLOWER_LOG = "flower.log"
FLOWER_LOGS_DIR = "flower-logs"
CLIENTS_DIR = "clients"  # per-client persistent state of personalised methods (fedhello.training.store)
ERROR_LOG = "error.log"  # full tracebacks of failures, for bug reports
# append-only logs: a checkpoint records their lengths, a resumed run cuts them back to those
LOG_FILES = (METRICS_FILE, ALLOCATIONS_FILE, IMPORTANCE_FILE)
# metrics.jsonl keys of lm-eval benchmark scores: lm_eval.<task>.<metric> (fedhello.tasks.lm_eval_scorer)
LM_EVAL_PREFIX = "lm_eval."


def new_run_dir(config: RunConfig, out: str | Path | None = None) -> Path:
    """A fresh folder `<output.dir>/<name>-<timestamp>` (or exactly `out` when given)."""
    if out is not None:
        path = Path(out)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(config.output.dir) / f"{config.name}-{stamp}"
        suffix = 1
        while path.exists():
            path = Path(config.output.dir) / f"{config.name}-{stamp}-{suffix}"
            suffix += 1
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write through a temporary file that is flushed to disk and renamed over `path`: a crash at any
    instant leaves the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a log, one per line ([] when the file is missing). A run killed while writing
    leaves a torn last line, which is skipped; a damaged line before it is an error."""
    if not path.exists():
        return []
    lines = [(number, line) for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for i, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise FedHelloError(
                f"'{path}' line {number} is not JSON (fix: restore the file, or delete the damaged line)"
            ) from None
        if isinstance(record, dict):
            records.append(record)
    return records


def read_json(path: Path) -> Any:  # noqa: ANN401 - whatever the file holds
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def log_sizes(run_dir: Path) -> dict[str, int]:
    """Byte length of every append-only log now (0 for a missing one): what a checkpoint records."""
    return {name: (run_dir / name).stat().st_size if (run_dir / name).exists() else 0 for name in LOG_FILES}


def truncate_logs(run_dir: Path, sizes: dict[str, int]) -> None:
    """Cut every log back to its length in `sizes` (a checkpoint's), dropping the rounds -- and any
    half-written line -- logged after it, so a resumed run never logs a round twice."""
    for name in LOG_FILES:
        path = run_dir / name
        size = sizes.get(name, 0)
        if size == 0:  # nothing of it belongs to the checkpoint (the writer recreates it)
            path.unlink(missing_ok=True)
            continue
        if not path.exists() or path.stat().st_size < size:
            why = "is missing from the run folder" if not path.exists() else "is shorter than at the checkpoint"
            raise FedHelloError(
                f"option '--resume': {name} {why} (fix: restore the run folder, or delete {CHECKPOINT_DIR}/ "
                "to restart the run from round 1)"
            )
        with path.open("rb+") as handle:
            handle.truncate(size)
