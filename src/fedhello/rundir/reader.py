"""Read a run folder back (the report, `fedhello compare`, `fedhello profile --check`, a resumed run),
tolerating what older or interrupted runs lack.

Only `metrics.jsonl` is required. Everything else (importance log, partition stats, summary, config,
per-client fields such as `peak_mem_mb`) is optional: readers leave out what is not there.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedhello.errors import FedHelloError
from fedhello.rundir.files import (
    ALLOCATIONS_FILE,
    CONFIG_FILE,
    IMPORTANCE_FILE,
    METRICS_FILE,
    PARTITION_FILE,
    SUMMARY_FILE,
    read_json,
    read_jsonl,
)


def as_number(value: Any) -> float | None:  # noqa: ANN401 - any JSON value
    """A finite float, or None for missing / null / NaN values."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The round records of `metrics.jsonl` in file order (a torn last line is skipped)."""
    return [r for r in read_jsonl(Path(run_dir) / METRICS_FILE) if isinstance(r.get("round"), int)]


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """`summary.json`, or None while the run is unfinished."""
    summary = read_json(Path(run_dir) / SUMMARY_FILE)
    return summary if isinstance(summary, dict) else None


@dataclass
class RunData:
    """One run folder's records, as plain Python data."""

    path: Path
    name: str
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    importance: list[dict[str, Any]] = field(default_factory=list)
    partition: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """Legend label: the run folder name, plus the strategy when the config names one."""
        strategy = self.config.get("strategy", {}).get("name")
        return f"{self.name} ({strategy})" if strategy else self.name

    @property
    def rounds(self) -> list[int]:
        return [int(r["round"]) for r in self.metrics]

    @property
    def metric(self) -> str:
        """The name of the headline metric that the records' `accuracy` holds: summary.json's `metric`; for a
        run without one (unfinished, or older), rouge_l when its records carry a causal LM's `rougeL`."""
        named = (self.summary or {}).get("metric")
        if isinstance(named, str) and named:
            return named
        return "rouge_l" if any("rougeL" in r for r in self.metrics) else "accuracy"

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(rounds, values) of a per-round metric, skipping rounds where it is missing (e.g. not evaluated)."""
        points = [(int(r["round"]), as_number(r.get(key))) for r in self.metrics]
        points = [(x, y) for x, y in points if y is not None]
        return [x for x, _ in points], [y for _, y in points]

    @property
    def clients(self) -> list[dict[str, Any]]:
        """Every (round, client) entry, with the round number added."""
        return [{**c, "round": int(r["round"])} for r in self.metrics for c in r.get("clients", [])]

    @property
    def num_layers(self) -> int:
        """Transformer layers of the model: from partition stats, importance, or the highest layer trained."""
        if self.partition and self.partition.get("num_layers"):
            return int(self.partition["num_layers"])
        if self.importance and self.importance[0].get("scores"):
            return len(self.importance[0]["scores"])
        trained = [int(layer) for c in self.clients for layer in c.get("layers", [])]
        tier_layers = [int(t.get("layers", 0)) for t in self.config.get("tiers", [])]
        return max([*(x + 1 for x in trained), *tier_layers, 0])

    @property
    def tiers(self) -> list[int]:
        """Tier indices seen in the run, sorted."""
        seen = {int(c["tier"]) for c in self.clients if c.get("tier") is not None}
        seen |= set(range(len(self.config.get("tiers", []))))
        return sorted(seen)

    def tier_name(self, tier: int) -> str:
        tiers = self.config.get("tiers", [])
        if 0 <= tier < len(tiers):
            return f"tier {tier} ({tier_summary(tiers[tier])})"
        return f"tier {tier}"


def tier_summary(tier: dict[str, Any]) -> str:
    """What limits a tier, from its resolved config: its budgets when it declares any (a budget tier's `layers`
    is only the count it affords with activations kept, which recomputing plans exceed), else its layer count."""
    budgets = [
        f"{tier[key]:.1f} {unit}" if unit != "s/step" else f"{tier[key]:.3g} {unit}"
        for key, unit in (("memory_mb", "MiB"), ("total_memory_mb", "MiB in total"), ("seconds_per_step", "s/step"))
        if tier.get(key) is not None
    ]
    if budgets:
        return ", ".join(f"<= {b}" for b in budgets)
    layers = tier.get("layers")
    return "?" if layers is None else f"{layers} layer{'' if layers == 1 else 's'}"


def load_run(path: str | Path) -> RunData:
    """Read a run folder; a folder without `metrics.jsonl` rounds is a user error."""
    path = Path(path)
    if not path.is_dir():
        raise FedHelloError(f"run folder '{path}' does not exist (fix: pass a folder written by `fedhello run`)")
    metrics = read_metrics(path)
    if not metrics:
        raise FedHelloError(
            f"run folder '{path}' has no rounds in {METRICS_FILE} (fix: pass a folder written by `fedhello run`)"
        )
    for record in metrics:
        record.setdefault("clients", [])
    if not any(r.get("clients") for r in metrics):
        metrics = _clients_from_csv(path / ALLOCATIONS_FILE, metrics)
    config: dict[str, Any] = {}
    if (path / CONFIG_FILE).exists():
        config = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
    partition = read_json(path / PARTITION_FILE)
    return RunData(
        path=path,
        name=path.resolve().name,
        config=config,
        metrics=sorted(metrics, key=lambda r: int(r["round"])),
        importance=[r for r in read_jsonl(path / IMPORTANCE_FILE) if "round" in r],
        partition=partition if isinstance(partition, dict) else None,
        summary=read_summary(path),
    )


def _clients_from_csv(path: Path, metrics: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill per-client tier and layers from allocations.csv when metrics.jsonl lacks them."""
    if not path.exists():
        return metrics
    by_round: dict[int, list[dict[str, Any]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                by_round.setdefault(int(row["round"]), []).append(
                    {
                        "id": int(row["client"]),
                        "tier": int(row["tier"]),
                        "layers": [int(x) for x in row.get("layers", "").split()],
                    }
                )
            except (KeyError, ValueError):
                continue
    for record in metrics:
        record["clients"] = by_round.get(int(record["round"]), [])
    return metrics
