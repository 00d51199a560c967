"""Per-cell numbers read from a finished run folder (metrics.jsonl and config.yaml).

Accuracy metrics that do not reward luck: the final accuracy (the last evaluated round, which the runner
evaluates on the whole test split), the mean of the last k evaluations, the final macro-F1; the best
accuracy over rounds is kept but is not the headline (picking the maximum of a noisy curve flatters).
How fast a method gets there: the first evaluated round that reaches a target accuracy and the MB its
clients uploaded until then (`time_to_target`; the target comes from the reference cell of the same
partition and seed, see `results.collect`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedhello.compare.grid import Cell
from fedhello.compare.ratios import ResourceCell, TierWorst
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
    uploads: list[tuple[int, float]] = field(default_factory=list)  # (round, bytes_up) of every record
    weak_mem_ratio: float | None = None  # the worst weak tier's median memory / the full reference
    weak_step_ratio: float | None = None
    tiers: tuple[TierWorst, ...] = ()  # every weak tier's largest plans
    # the first evaluated round reaching 95 % of the reference's final accuracy (same partition and seed) and
    # the MB uploaded until then; target_reached None: no reference cell to compare with
    target_round: int | None = None
    target_mb: float | None = None
    target_reached: bool | None = None
    # personalised evaluation (`federation.local_test`): the last evaluated round's mean over its clients, weighted
    # by local-test size, of the global model's and the personalised models' scores on their local test splits
    local_global: float | None = None
    local_personal: float | None = None

    @property
    def local_best(self) -> float | None:
        """The client's own model on its local test split: the personalised one where the method has one, else the
        global model (what a client of a method without a personal part uses)."""
        return self.local_personal if self.local_personal is not None else self.local_global

    @property
    def worst_mem_ratio(self) -> float | None:
        """The largest plan's memory ratio over every weak tier."""
        return max((t.memory for t in self.tiers if t.memory is not None), default=None)

    @property
    def worst_step_ratio(self) -> float | None:
        return max((t.step for t in self.tiers if t.step is not None), default=None)

    def tier(self, index: int) -> TierWorst | None:
        """This cell's numbers for weak tier `index` (None when that tier is not weak here)."""
        return next((t for t in self.tiers if t.tier == index), None)

    def as_csv(self, weak: Sequence[int] = ()) -> dict[str, Any]:
        """Every number of the cell; `weak`: the grid's weak tiers (one group of columns each, empty where
        the tier is not weak in this cell)."""
        out = {
            "partition": self.partition,
            "method": self.method,
            "seed": self.seed,
            "final": self.final,
            "last_k_mean": self.last_k_mean,
            "macro_f1": self.macro_f1,
            "best": self.best,
            "local_global": self.local_global,
            "local_personal": self.local_personal,
            "rounds_to_target": self.target_round,
            "mb_to_target": self.target_mb,
            "target_reached": self.target_reached,
            "weak_mem_ratio": self.weak_mem_ratio,
            "weak_step_ratio": self.weak_step_ratio,
            "worst_mem_ratio": self.worst_mem_ratio,
            "worst_step_ratio": self.worst_step_ratio,
        }
        for index in weak:
            t = self.tier(index)
            out.update(
                tier_csv(index, *((t.memory, t.step, t.over_budget, t.plans, t.training_memory) if t else (None,) * 5))
            )
        out["wall_seconds"] = self.wall_seconds
        return out


def tier_csv(
    tier: int,
    memory: float | None,
    step: float | None,
    over: int | None,
    plans: int | None,
    training_memory: float | None = None,
) -> dict[str, Any]:
    """The CSV columns of one weak tier's largest plans."""
    return {
        f"tier{tier}_max_mem_ratio": memory,
        f"tier{tier}_max_train_mem_ratio": training_memory,
        f"tier{tier}_max_step_ratio": step,
        f"tier{tier}_over_budget": over,
        f"tier{tier}_plans": plans,
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
        **local_test_finals(records),
    }


def local_test_finals(records: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """The last personalised evaluation's weighted means (`local_global`, `local_personal`; None when absent)."""
    scored = [r["local_test"] for r in records if isinstance(r.get("local_test"), dict) and r["local_test"]]
    last = scored[-1] if scored else {}
    return {f"local_{kind}": _number((last.get(kind) or {}).get("weighted_mean")) for kind in ("global", "personal")}


def time_to_target(
    curve: Sequence[tuple[int, float]], uploads: Sequence[tuple[int, float]], target: float
) -> tuple[int | None, float | None]:
    """The first evaluated round whose accuracy reaches `target`, and the MB uploaded in the rounds up to and
    including it; (None, None) when no round reaches it."""
    reached = next((r for r, accuracy in curve if accuracy >= target), None)
    if reached is None:
        return None, None
    return reached, sum(b for r, b in uploads if r <= reached) / 1e6


def full_rank_strategy(name: str) -> bool | None:
    """Whether the registered allocator `name` declares only full-rank uploads (None when not registered)."""
    from fedhello.components import ALLOCATORS
    from fedhello.plan import Upload

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
        uploads=[(int(r["round"]), float(_number(r.get("bytes_up")) or 0.0)) for r in records if "round" in r],
    )
    strategy = str((saved.get("strategy") or {}).get("name", ""))
    resources = ResourceCell(
        strategy=strategy,
        tiers=list(saved.get("tiers") or []),
        clients=[c for r in records for c in r.get("clients", [])],
        full_rank=full_rank_strategy(strategy),
        quantization=str((saved.get("model") or {}).get("quantization") or "none"),
    )
    return result, resources
