"""Straggler: every client is held to the weakest tier's layers, so the federation is homogeneous."""

from fedhello.allocation import ALLOCATORS, Allocator
from fedhello.config import StrategyConfig
from fedhello.methods.base import Method, register, strategy
from fedhello.patterns import tier_layers
from fedhello.plan import Plan


@ALLOCATORS.register("straggler")
class StragglerAllocator(Allocator):
    """Every client is held to the weakest tier's budget, on a fixed evenly spread layer set (the `uniform`
    pattern: alternate layers for half the depth)."""

    def __init__(
        self, config: StrategyConfig, num_layers: int, tier_budgets: list[int], lora_rank: int = 8, constraints=()
    ) -> None:  # noqa: ANN001
        super().__init__(config, num_layers, tier_budgets, lora_rank, constraints)
        self.layers = tier_layers("uniform", num_layers, min(tier_budgets))

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {cid: Plan(self.layers) for cid in budgets}


register(
    Method("straggler", "every client held to the weakest tier's layers (alternate layers)", strategy("straggler"))
)
