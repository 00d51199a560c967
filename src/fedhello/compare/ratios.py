"""What a method asks of its weak devices, from the runs' own records (`train.record_resources: true`).

Every client entry of metrics.jsonl then carries its `tier`, trained `layers`, `peak_mem_mb` (training memory
above the loaded model), `total_mem_mb` (weights + peak: what the device must hold), `step_seconds` (wall) and,
in newer runs, `step_cpu_seconds` (CPU time, robust to other processes on the machine) and `recompute` (the
client recomputed activations: gradient checkpointing).

- *Memory* is the whole memory, `total_mem_mb`, so a tier that loads quantized weights is compared by what it
  holds; a partition with any memory record lacking it (older runs) falls back to `peak_mem_mb` for all, so a
  ratio never divides a total by a peak. *Step time* is CPU time when every timed entry has it, else wall time.
- *Full reference* of a partition: the median over the client entries, across every cell of the partition,
  that trained all L layers (L = max layer index + 1 over the entries, at least the largest tier's layer
  count) with a full-rank, two-factor plan (a method whose allocator declares only full-rank uploads,
  `Allocator.uploads`; client entries do not carry ranks; without that declaration the allocators of
  PARTIAL_PLAN_STRATEGIES count as partial), without recomputing activations, on a tier that loads the run's
  own quantization. So the reference is one plan on one kind of device, whatever share of the pool other
  tiers make up.
- *Weak tiers*: every tier but the strongest, by (`layers`, `memory_mb`, `total_memory_mb`,
  `seconds_per_step`), a missing budget being unbounded. A cell with a single tier (`centralized`) has none.
- Per weak tier of a cell: the *largest* plan's memory and step time over the reference (the max over the
  tier's entries: a device must hold its largest plan, not its typical one), how many plans went over any of
  the tier's budgets, and how many plans there were. The median ratio of the worst weak tier is kept too.
  A weak tier without entries (e.g. `exclusive`, whose weak clients never train) has no ratio; a partition
  without a full reference has none either (None).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MEMORY_KEY = "total_mem_mb"
PEAK_MEMORY_KEY = "peak_mem_mb"
CPU_STEP_KEY = "step_cpu_seconds"
WALL_STEP_KEY = "step_seconds"
# allocators whose plans are not full-rank on both LoRA factors: tier ranks (HetLoRA, FlexLoRA), LEGEND's
# depth ranks, FFA-LoRA's frozen A; FedSA-LoRA trains both factors but sends A only (kept out, conservatively).
# Their all-layer entries may cost less than a full plan, so they are no reference.
# (A fallback: `cells.read_cell` asks the allocator registry.)
PARTIAL_PLAN_STRATEGIES = frozenset({"tier_rank", "hetlora", "ard_lora", "legend", "ffa", "fedsa"})


@dataclass(frozen=True)
class ResourceCell:
    """What the ratios need from one cell: its allocator, its tiers (config.yaml), every client entry, whether
    its plans are full-rank on both factors (None: decided by PARTIAL_PLAN_STRATEGIES) and the run's
    `model.quantization`."""

    strategy: str
    tiers: list[dict[str, Any]]
    clients: list[dict[str, Any]]
    full_rank: bool | None = None
    quantization: str = "none"

    @property
    def full_rank_plans(self) -> bool:
        return self.strategy not in PARTIAL_PLAN_STRATEGIES if self.full_rank is None else self.full_rank

    def loads_run_quantization(self, client: dict[str, Any]) -> bool:
        """The client's tier loads the run's own base weights (its `quantization` is null or the run's)."""
        tier = client.get("tier")
        if not isinstance(tier, int) or not 0 <= tier < len(self.tiers):
            return not self.tiers  # a run without tiers loads one model
        return self.tiers[tier].get("quantization") in (None, self.quantization)


@dataclass(frozen=True)
class TierWorst:
    """The largest plans of one weak tier in one cell."""

    tier: int  # index into the cell's tiers
    rank: int  # 0 = the weakest of the cell's weak tiers
    label: str  # e.g. "T0 (1 layer)"
    memory: float | None  # largest plan's memory / the full reference
    step: float | None  # largest plan's step time / the full reference
    over_budget: int  # plans over any of the tier's budgets
    plans: int  # the tier's client entries
    # largest plan's training memory (`peak_mem_mb`, weights left out) / the reference plan's: what `memory_mb`
    # budgets limit (the memory column counts the weights, so quantized tiers compare honestly)
    training_memory: float | None = None


@dataclass(frozen=True)
class Ratios:
    """One cell's weak-tier numbers."""

    memory: float | None  # the worst weak tier's median memory / reference
    step: float | None
    tiers: tuple[TierWorst, ...] = field(default_factory=tuple)  # every weak tier, in tier order


def step_key(clients: Sequence[dict[str, Any]]) -> str:
    """CPU step time when every timed entry has it, else wall step time (mixing the two would bias ratios)."""
    timed = [c for c in clients if c.get(WALL_STEP_KEY) is not None or c.get(CPU_STEP_KEY) is not None]
    return CPU_STEP_KEY if timed and all(c.get(CPU_STEP_KEY) is not None for c in timed) else WALL_STEP_KEY


def memory_key(clients: Sequence[dict[str, Any]]) -> str:
    """Total memory (weights included) when every entry with a memory record has it, else peak training memory
    for all (records of older runs lack the total; a ratio of a total to a peak would mean nothing)."""
    measured = [c for c in clients if c.get(PEAK_MEMORY_KEY) is not None or c.get(MEMORY_KEY) is not None]
    return MEMORY_KEY if measured and all(c.get(MEMORY_KEY) is not None for c in measured) else PEAK_MEMORY_KEY


def layer_count(clients: Sequence[dict[str, Any]]) -> int:
    """Number of layers: the largest trained layer index + 1 (0 when nothing was trained)."""
    return max((max(c["layers"]) + 1 for c in clients if c.get("layers")), default=0)


def is_full(client: dict[str, Any], num_layers: int) -> bool:
    """Trained every layer, with no per-layer ranks."""
    return (
        num_layers > 0
        and sorted(set(client.get("layers") or [])) == list(range(num_layers))
        and not client.get("ranks")
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(float(value)) else None


def _median(values: Sequence[Any]) -> float | None:
    numbers = [n for v in values if (n := _number(v)) is not None]
    return statistics.median(numbers) if numbers else None


def is_reference_plan(cell: ResourceCell, client: dict[str, Any], num_layers: int) -> bool:
    """A full plan on a reference device: all layers at full rank on both factors, activations kept (no
    recompute), base weights in the run's own quantization."""
    return (
        cell.full_rank_plans
        and is_full(client, num_layers)
        and not client.get("recompute")
        and cell.loads_run_quantization(client)
    )


def full_reference(cells: Sequence[ResourceCell], key: str, num_layers: int) -> float | None:
    """Median `key` over the reference plans of every cell (`is_reference_plan`)."""
    values = [c.get(key) for cell in cells for c in cell.clients if is_reference_plan(cell, c, num_layers)]
    reference = _median(values)
    return reference if reference else None  # None or a zero reference gives no ratio


BUDGET_KINDS = ("layers", "memory_mb", "total_memory_mb", "seconds_per_step")  # strength order


def tier_strength(tier: dict[str, Any], num_layers: int) -> tuple[float, ...]:
    """(layers, memory_mb, total_memory_mb, seconds_per_step), a missing budget unbounded (layers: all)."""
    layers = tier.get("layers")
    values = [float(num_layers if layers is None else layers)]
    values += [math.inf if tier.get(kind) is None else float(tier[kind]) for kind in BUDGET_KINDS[1:]]
    return tuple(values)


def weak_tiers(tiers: Sequence[dict[str, Any]], num_layers: int) -> list[int]:
    """Indices of every tier but the strongest ones (compared on every budget kind, in `tier_strength`'s
    order), weakest first. Empty when all tiers are alike or there is one tier."""
    if not tiers:
        return []
    strengths = [tier_strength(t, num_layers) for t in tiers]
    top = max(strengths)
    return sorted((i for i, s in enumerate(strengths) if s != top), key=lambda i: (strengths[i], i))


def tier_label(index: int, tier: dict[str, Any]) -> str:
    """`T0 (1 layer)`, `T1 (total ≤ 500 MiB, int8)`: the tier's index and the budgets it declares."""
    parts = []
    if tier.get("layers") is not None:
        parts.append(f"{tier['layers']} layer{'s' if tier['layers'] != 1 else ''}")
    if tier.get("memory_mb") is not None:
        parts.append(f"train ≤ {tier['memory_mb']:g} MiB")
    if tier.get("total_memory_mb") is not None:
        parts.append(f"total ≤ {tier['total_memory_mb']:g} MiB")
    if tier.get("seconds_per_step") is not None:
        parts.append(f"≤ {tier['seconds_per_step']:g} s/step")
    if tier.get("quantization") not in (None, "none"):
        parts.append(str(tier["quantization"]))
    return f"T{index} ({', '.join(parts)})" if parts else f"T{index}"


def over_budget(client: dict[str, Any], tier: dict[str, Any], step: str) -> bool:
    """The plan exceeded any budget its tier declares: `memory_mb` (training peak), `total_memory_mb` (total
    memory), `seconds_per_step` (the step time `step`), and on a tier limited by a count alone `layers` (trained
    layer count). A tier with a memory or time budget has its layer count written by the run (what its budget
    trains with activations kept, the count layer-count strategies hand out): a plan that recomputes activations
    to train more layers within the budget has not broken it. A budget whose value the entry does not record is
    not counted as exceeded."""
    counted = not any(tier.get(kind) is not None for kind in BUDGET_KINDS[1:])
    checks = (
        ("memory_mb", _number(client.get(PEAK_MEMORY_KEY))),
        ("total_memory_mb", _number(client.get(MEMORY_KEY))),
        ("seconds_per_step", _number(client.get(step))),
        ("layers", float(len(client.get("layers") or [])) if counted else None),
    )
    return any(
        (budget := tier.get(kind)) is not None and value is not None and value > float(budget) for kind, value in checks
    )


def _ratio(value: float | None, reference: float | None) -> float | None:
    return None if value is None or reference is None else value / reference


def tier_worst(
    cell: ResourceCell,
    tier: int,
    rank: int,
    keys: tuple[str, str],
    references: tuple[float | None, float | None],
    training_reference: float | None = None,
) -> TierWorst:
    """The largest plans of `tier` in `cell`: max memory and step time (`keys`) over the tier's entries, each
    over its reference, the largest training memory over `training_reference`, and the plans over the tier's
    budgets."""
    entries = [c for c in cell.clients if c.get("tier") == tier]
    largest = [
        max((n for c in entries if (n := _number(c.get(k))) is not None), default=None)
        for k in (*keys, PEAK_MEMORY_KEY)
    ]
    return TierWorst(
        tier=tier,
        rank=rank,
        label=tier_label(tier, cell.tiers[tier]),
        memory=_ratio(largest[0], references[0]),
        step=_ratio(largest[1], references[1]),
        over_budget=sum(over_budget(c, cell.tiers[tier], keys[1]) for c in entries),
        plans=len(entries),
        training_memory=_ratio(largest[2], training_reference),
    )


def median_ratio(cell: ResourceCell, key: str, reference: float | None, num_layers: int) -> float | None:
    """Max over weak tiers of (median `key` of the tier's entries) / reference: the typical plan."""
    ratios = []
    for tier in weak_tiers(cell.tiers, num_layers):
        median = _median([c.get(key) for c in cell.clients if c.get("tier") == tier])
        if median is not None and reference is not None:
            ratios.append(median / reference)
    return max(ratios, default=None)


def partition_ratios(cells: Sequence[ResourceCell]) -> list[Ratios]:
    """Weak-tier ratios of every cell of one partition (in the given order), against the partition's full
    reference."""
    clients = [c for cell in cells for c in cell.clients]
    tier_layers = [t["layers"] for cell in cells for t in cell.tiers if isinstance(t.get("layers"), int)]
    num_layers = max([layer_count(clients), *tier_layers])
    keys = (memory_key(clients), step_key(clients))
    references = (full_reference(cells, keys[0], num_layers), full_reference(cells, keys[1], num_layers))
    training_reference = full_reference(cells, PEAK_MEMORY_KEY, num_layers)
    out = []
    for cell in cells:
        weak = weak_tiers(cell.tiers, num_layers)
        worst = tuple(
            sorted(
                (tier_worst(cell, i, rank, keys, references, training_reference) for rank, i in enumerate(weak)),
                key=lambda t: t.tier,
            )
        )
        out.append(
            Ratios(
                median_ratio(cell, keys[0], references[0], num_layers),
                median_ratio(cell, keys[1], references[1], num_layers),
                worst,
            )
        )
    return out
