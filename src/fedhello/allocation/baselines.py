"""Allocators of the peer methods that fedhello compares Fed-HeLLo against.

Layer-heterogeneous: `straggler` (everyone at the weakest tier's budget), `exclusive` (only the strongest
tier trains). Rank-heterogeneous (HetLoRA, FlexLoRA): `tier_rank`. Factor-restricted: `ffa` (FFA-LoRA, only B).
Depth-and-rank: `legend` (LEGEND: the last k layers, ranks rising toward the output). FedIT (`full`) and FedRA
(`random`) live in strategies.py.

Rank-heterogeneous allocators hand out ranks up to the adapter's rank r_max (`Allocator.lora_rank`).
"""

from __future__ import annotations

import math

from fedhello.allocation.base import ALLOCATORS, Allocator
from fedhello.allocation.patterns import tier_layers
from fedhello.config import StrategyConfig
from fedhello.errors import ConfigError
from fedhello.plan import Plan, Upload


def budget_rank(lora_rank: int, budget: int, num_layers: int) -> int:
    """The rank that spends a tier's layer budget on all layers instead: r_max * budget / L (at least 1).
    With RoC 3/4/6 of 6 layers and r_max 8 the tiers get ranks 4/5/8: roughly the same trainable
    parameters and upload as training `budget` full-rank layers."""
    return max(1, min(lora_rank, round(lora_rank * budget / num_layers)))


def depth_ranks(lora_rank: int, num_layers: int) -> dict[int, int]:
    """LEGEND's rank profile: ranks rising linearly with depth, r_max at the output layer."""
    return {i: max(1, math.ceil(lora_rank * (i + 1) / num_layers)) for i in range(num_layers)}


@ALLOCATORS.register("straggler")
class StragglerAllocator(Allocator):
    """Every client is held to the weakest tier's budget, on a fixed evenly spread layer set (the `uniform`
    pattern: alternate layers for half the depth), so the federation is homogeneous."""

    def __init__(self, config: StrategyConfig, num_layers: int, tier_budgets: list[int], lora_rank: int = 8) -> None:
        super().__init__(config, num_layers, tier_budgets, lora_rank)
        self.layers = tier_layers("uniform", num_layers, min(tier_budgets))

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {cid: Plan(self.layers) for cid in budgets}


@ALLOCATORS.register("exclusive")
class ExclusiveAllocator(Allocator):
    """Exclusive learning, as published: only clients whose budget covers the whole model train (every
    layer); the others sit the round out, so a round may have fewer (or no) participants. When no tier can
    train every layer nobody ever would, so the run is refused when the federation is built."""

    def __init__(self, config: StrategyConfig, num_layers: int, tier_budgets: list[int], lora_rank: int = 8) -> None:
        super().__init__(config, num_layers, tier_budgets, lora_rank)
        if max(tier_budgets) < num_layers:
            raise ConfigError(
                "tiers",
                f"strategy 'exclusive' trains only clients that can train all {num_layers} layers, and no tier "
                f"can (budgets {', '.join(map(str, tier_budgets))}): nobody would ever train",
                f"give one tier layers: {num_layers}, or use another strategy (e.g. straggler)",
            )

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {cid: Plan(tuple(range(self.num_layers))) for cid, k in budgets.items() if k >= self.num_layers}


class RankAllocator(Allocator):
    """Base of allocators that give clients per-layer LoRA ranks of at most `lora_rank`: their uploads may be
    rank-truncated."""

    uploads = frozenset({Upload.FULL, Upload.TRUNCATED})


@ALLOCATORS.register("tier_rank")
class TierRankAllocator(RankAllocator):
    """HetLoRA / FlexLoRA: every client trains every layer at a rank set by its tier (`budget_rank`)."""

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        plans = {}
        for cid, k in budgets.items():
            rank = budget_rank(self.lora_rank, k, self.num_layers)
            plans[cid] = Plan(tuple(range(self.num_layers)), ranks=dict.fromkeys(range(self.num_layers), rank))
        return plans


@ALLOCATORS.register("ffa")
class FrozenAAllocator(Allocator):
    """FFA-LoRA: every client trains every layer's B only; A stays at the shared seeded initialisation and
    is never sent (half the upload). As published, FFA-LoRA is a homogeneous method: every client trains the
    whole model whatever its tier budget (like FedIT), so it is an upper bound on resources, not a
    budget-respecting baseline; `respects_budgets = False` makes the CLI say so at the start of a run."""

    uploads = frozenset({Upload.ONE_FACTOR})
    respects_budgets = False

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {cid: Plan(tuple(range(self.num_layers)), train_lora_a=False) for cid in budgets}


@ALLOCATORS.register("legend")
class LegendAllocator(RankAllocator):
    """LEGEND: a client with budget k tunes the k layers nearest the output; layer i has rank
    ceil(r_max * (i + 1) / L) for every client (`depth_ranks`), so deeper layers get more rank."""

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        ranks = depth_ranks(self.lora_rank, self.num_layers)
        plans = {}
        for cid, k in budgets.items():
            layers = tuple(range(self.num_layers - k, self.num_layers))
            plans[cid] = Plan(layers, ranks={i: ranks[i] for i in layers})
        return plans
