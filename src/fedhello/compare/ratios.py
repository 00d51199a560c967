"""What a method asks of its weak devices, from the runs' own records (`train.record_resources: true`).

Every client entry of metrics.jsonl then carries `peak_mem_mb`, `step_seconds` (wall) and, in newer runs,
`step_cpu_seconds` (CPU time, robust to other processes on the machine; preferred when every entry has it),
next to its `tier` and trained `layers`.

- *Full reference* of a partition: the median over all client entries, across every cell of the partition,
  that trained all L layers (L = max layer index + 1 over the entries, at least the largest tier's layer
  count) with a full-rank, two-factor plan, i.e. of a method whose allocator declares only full-rank uploads
  (`Allocator.uploads`; client entries do not carry ranks). Without that declaration, the allocators of
  PARTIAL_PLAN_STRATEGIES count as partial.
- *Weak tiers*: every tier but the strongest (most layers, then the largest or no memory / time budget).
- A cell's weak-tier ratio: the max over weak tiers of the median of that tier's entries / the full reference.
  A weak tier without entries (e.g. `exclusive`, whose weak clients never train) is left out; a cell with
  no weak-tier entry, or a partition without a full reference, has no ratio (None).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MEMORY_KEY = "peak_mem_mb"
CPU_STEP_KEY = "step_cpu_seconds"
WALL_STEP_KEY = "step_seconds"
# allocators whose plans are not full-rank on both LoRA factors: tier ranks (HetLoRA, FlexLoRA), LEGEND's
# depth ranks, FFA-LoRA's frozen A. Their all-layer entries cost less than a full plan, so they are no reference.
# (A fallback: `cells.read_cell` asks the allocator registry.)
PARTIAL_PLAN_STRATEGIES = frozenset({"tier_rank", "legend", "ffa"})


@dataclass(frozen=True)
class ResourceCell:
    """What the ratios need from one cell: its allocator, its tiers (config.yaml), every client entry, and
    whether its plans are full-rank on both factors (None: decided by PARTIAL_PLAN_STRATEGIES)."""

    strategy: str
    tiers: list[dict[str, Any]]
    clients: list[dict[str, Any]]
    full_rank: bool | None = None

    @property
    def full_rank_plans(self) -> bool:
        return self.strategy not in PARTIAL_PLAN_STRATEGIES if self.full_rank is None else self.full_rank


@dataclass(frozen=True)
class Ratios:
    memory: float | None
    step: float | None


def step_key(clients: Sequence[dict[str, Any]]) -> str:
    """CPU step time when every timed entry has it, else wall step time (mixing the two would bias ratios)."""
    timed = [c for c in clients if c.get(WALL_STEP_KEY) is not None or c.get(CPU_STEP_KEY) is not None]
    return CPU_STEP_KEY if timed and all(c.get(CPU_STEP_KEY) is not None for c in timed) else WALL_STEP_KEY


def layer_count(clients: Sequence[dict[str, Any]]) -> int:
    """Number of layers: the largest trained layer index + 1 (0 when nothing was trained)."""
    return max((max(c["layers"]) + 1 for c in clients if c.get("layers")), default=0)


def is_full(client: dict[str, Any], num_layers: int) -> bool:
    """Trained every layer, with no per-layer ranks."""
    return num_layers > 0 and sorted(set(client.get("layers") or [])) == list(range(num_layers)) and not client.get(
        "ranks"
    )


def _median(values: Sequence[Any]) -> float | None:
    numbers = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.median(numbers) if numbers else None


def full_reference(cells: Sequence[ResourceCell], key: str, num_layers: int) -> float | None:
    """Median `key` over the full-plan, all-layer client entries of full-rank methods."""
    values = [
        c.get(key)
        for cell in cells
        if cell.full_rank_plans
        for c in cell.clients
        if is_full(c, num_layers)
    ]
    reference = _median(values)
    return reference if reference else None  # None or a zero reference gives no ratio


def weak_tiers(tiers: Sequence[dict[str, Any]], num_layers: int) -> list[int]:
    """Indices of every tier but the strongest ones (most layers; then the largest, or no, memory and time
    budget). Empty when all tiers are alike."""

    def strength(tier: dict[str, Any]) -> tuple[float, float, float]:
        layers = tier.get("layers")
        memory, seconds = tier.get("memory_mb"), tier.get("seconds_per_step")
        return (
            float(num_layers if layers is None else layers),
            math.inf if memory is None else float(memory),
            math.inf if seconds is None else float(seconds),
        )

    if not tiers:
        return []
    top = max(strength(t) for t in tiers)
    return [i for i, tier in enumerate(tiers) if strength(tier) != top]


def weak_tier_ratio(cell: ResourceCell, key: str, reference: float | None, num_layers: int) -> float | None:
    """Max over weak tiers of (median `key` of the tier's entries) / reference."""
    if reference is None:
        return None
    ratios = []
    for tier in weak_tiers(cell.tiers, num_layers):
        median = _median([c.get(key) for c in cell.clients if c.get("tier") == tier])
        if median is not None:
            ratios.append(median / reference)
    return max(ratios, default=None)


def partition_ratios(cells: Sequence[ResourceCell]) -> list[Ratios]:
    """Weak-tier memory and step-time ratios of every cell of one partition (in the given order)."""
    clients = [c for cell in cells for c in cell.clients]
    tier_layers = [t["layers"] for cell in cells for t in cell.tiers if isinstance(t.get("layers"), int)]
    num_layers = max([layer_count(clients), *tier_layers])
    key = step_key(clients)
    memory_ref = full_reference(cells, MEMORY_KEY, num_layers)
    step_ref = full_reference(cells, key, num_layers)
    return [
        Ratios(
            weak_tier_ratio(cell, MEMORY_KEY, memory_ref, num_layers),
            weak_tier_ratio(cell, key, step_ref, num_layers),
        )
        for cell in cells
    ]
