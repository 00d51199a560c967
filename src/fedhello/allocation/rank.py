"""Rank heterogeneity on the allocation side: every client trains every layer at a rank its tier affords (HetLoRA,
FlexLoRA share it; their aggregation differs). Ranks go up to the adapter's rank r_max (`Allocator.lora_rank`).
"""

from __future__ import annotations

from fedhello.allocation.base import Allocator
from fedhello.plan import Plan, Upload


def budget_rank(lora_rank: int, budget: int, num_layers: int) -> int:
    """The rank that spends a tier's layer budget on all layers instead: r_max * budget / L (at least 1).
    With RoC 3/4/6 of 6 layers and r_max 8 the tiers get ranks 4/5/8: roughly the same trainable
    parameters and upload as training `budget` full-rank layers."""
    return max(1, min(lora_rank, round(lora_rank * budget / num_layers)))


class RankAllocator(Allocator):
    """Base of allocators that give clients per-layer LoRA ranks of at most `lora_rank`: their uploads may be
    rank-truncated."""

    uploads = frozenset({Upload.FULL, Upload.TRUNCATED})


class TierRankAllocator(RankAllocator):
    """Every client trains every layer at a rank set by its tier (`budget_rank`)."""

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        plans = {}
        for cid, k in budgets.items():
            rank = budget_rank(self.lora_rank, k, self.num_layers)
            plans[cid] = Plan(tuple(range(self.num_layers)), ranks=dict.fromkeys(range(self.num_layers), rank))
        return plans
