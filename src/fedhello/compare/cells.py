"""Per-cell numbers read from a finished run folder (metrics.jsonl and config.yaml).

Accuracy metrics that do not reward luck: the final accuracy (the last evaluated round, which the runner
evaluates on the whole test split), the mean of the last k evaluations, the final macro-F1; the best
accuracy over rounds is kept but is not the headline (picking the maximum of a noisy curve flatters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedhello.compare.grid import Cell
from fedhello.compare.ratios import ResourceCell
from fedhello.rundir import CONFIG_FILE, METRICS_FILE, read_jsonl


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (the run folder's reader: a torn last line is skipped, a damaged line
    before it is an error)."""
    return read_jsonl(path)


@dataclass
class CellResult:
    """One finished cell's numbers (accuracies as fractions)."""

    partition: str
    method: str
    seed: int
    final: float | None
    last_k_mean: float | None
    macro_f1: float | None
    best: float | None
    upload_mb_per_round: float
    train_s_per_round: float
    wall_seconds: float  # sum of the rounds' wall time (set-up excluded)
    curve: list[tuple[int, float]] = field(default_factory=list)
    weak_mem_ratio: float | None = None
    weak_step_ratio: float | None = None

    def as_csv(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "method": self.method,
            "seed": self.seed,
            "final": self.final,
            "last_k_mean": self.last_k_mean,
            "macro_f1": self.macro_f1,
            "best": self.best,
            "weak_mem_ratio": self.weak_mem_ratio,
            "weak_step_ratio": self.weak_step_ratio,
            "wall_seconds": self.wall_seconds,
        }


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and np.isfinite(value) else None


def accuracy_metrics(records: Sequence[dict[str, Any]], last_k: int) -> dict[str, Any]:
    """final / last-k mean / final macro-F1 / best accuracy and the accuracy curve of one run's records."""
    evaluated = [r for r in records if _number(r.get("accuracy")) is not None]
    accuracies = [float(r["accuracy"]) for r in evaluated]
    return {
        "final": accuracies[-1] if accuracies else None,
        "last_k_mean": float(np.mean(accuracies[-last_k:])) if accuracies else None,
        "macro_f1": _number(evaluated[-1].get("macro_f1")) if evaluated else None,
        "best": max(accuracies, default=None),
        "curve": [(int(r["round"]), float(r["accuracy"])) for r in evaluated],
    }


def full_rank_strategy(name: str) -> bool | None:
    """Whether the registered allocator `name` declares only full-rank uploads (None when not registered)."""
    from fedhello.allocation import ALLOCATORS
    from fedhello.allocation.base import Upload

    return set(ALLOCATORS.get(name).uploads) == {Upload.FULL} if name in ALLOCATORS else None


def read_cell(cell: Cell, last_k: int) -> tuple[CellResult, ResourceCell]:
    """The cell's numbers and what the resource ratios need from it (ratios are filled in per partition)."""
    records = read_metrics(cell.run_dir / METRICS_FILE)
    saved = yaml.safe_load((cell.run_dir / CONFIG_FILE).read_text()) or {}
    result = CellResult(
        partition=cell.partition,
        method=cell.method,
        seed=cell.seed,
        **accuracy_metrics(records, last_k),
        upload_mb_per_round=float(np.mean([r.get("bytes_up", 0) for r in records])) / 1e6 if records else 0.0,
        train_s_per_round=float(np.mean([r.get("train_seconds", 0.0) for r in records])) if records else 0.0,
        wall_seconds=float(sum(r.get("wall_seconds", 0.0) for r in records)),
    )
    strategy = str((saved.get("strategy") or {}).get("name", ""))
    resources = ResourceCell(
        strategy=strategy,
        tiers=list(saved.get("tiers") or []),
        clients=[c for r in records for c in r.get("clients", [])],
        full_rank=full_rank_strategy(strategy),
    )
    return result, resources
