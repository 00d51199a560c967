"""Exclusive learning: only the strongest tier trains (every layer); the others sit the round out."""

from fedhello.allocation import ALLOCATORS, Allocator
from fedhello.config import StrategyConfig
from fedhello.errors import ConfigError
from fedhello.methods.base import Method, register, strategy
from fedhello.plan import Plan


@ALLOCATORS.register("exclusive")
class ExclusiveAllocator(Allocator):
    """Exclusive learning, as published: only clients whose budget covers the whole model train (every
    layer); the others sit the round out, so a round may have fewer (or no) participants. When no tier can
    train every layer nobody ever would, so the run is refused when the federation is built."""

    def __init__(
        self, config: StrategyConfig, num_layers: int, tier_budgets: list[int], lora_rank: int = 8, constraints=()
    ) -> None:  # noqa: ANN001
        super().__init__(config, num_layers, tier_budgets, lora_rank, constraints)
        if max(tier_budgets) < num_layers:
            raise ConfigError(
                "tiers",
                f"strategy 'exclusive' trains only clients that can train all {num_layers} layers, and no tier "
                f"can (budgets {', '.join(map(str, tier_budgets))}): nobody would ever train",
                f"give one tier layers: {num_layers}, or use another strategy (e.g. straggler)",
            )

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {cid: Plan(tuple(range(self.num_layers))) for cid, k in budgets.items() if k >= self.num_layers}


register(Method("exclusive", "only the strongest tier trains (all layers); the others sit out", strategy("exclusive")))
