"""HetLoRA's options (`strategy: {name: hetlora, ...}`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedhello.config import StrategyConfig

# HetLoRA's self-pruning: drop the top quarter of a client's components (self_prune_ratio 0.75) when their update is
# under a tenth of the rest's. The paper gives the rule, not values for this scale; these are ours.
PRUNE_THRESHOLD = 0.1


class HetLoRAOptions(StrategyConfig):
    """Every layer at a tier rank; how a rank-r client scales and prunes its adapter."""

    rank_scaling: Literal["fixed", "per_rank"] = Field(
        "per_rank",
        description="hetlora: scale of a rank-r client's LoRA update: per_rank = alpha / r, as a rank-r adapter "
        "trained alone (HetLoRA); fixed = alpha / r_max for everyone (peft's). The server always stores factors at "
        "alpha / r_max (docs/compare.md)",
    )
    self_prune_threshold: float = Field(
        PRUNE_THRESHOLD,
        ge=0.0,
        description="hetlora: rank self-pruning (0 = off): after local training a client drops the top components "
        "of a LoRA pair when the norm of their product is at most this fraction of the norm of the kept components' "
        "product; such a pair is sent as the lower-rank adapter it now is",
    )
    self_prune_ratio: float = Field(
        0.75,
        gt=0.0,
        lt=1.0,
        description="hetlora: rank kept by a self-pruning client, as a fraction of its rank (rounded down, at least "
        "1, at least one component dropped)",
    )

    @property
    def sends_lower_ranks(self) -> bool:
        return self.self_prune_threshold > 0
