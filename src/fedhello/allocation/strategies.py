"""The allocation strategies: GD, RGD, FIM, the FIM+GD co-design (Fed-HeLLo), random (FedRA), full (FedIT).

Each is one small class registered by name; `StrategyConfig.name` selects it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedhello.allocation.base import ALLOCATORS, Allocator, sample_layers
from fedhello.allocation.importance import is_refresh_round, level_probabilities
from fedhello.allocation.patterns import pattern_counts, tier_layers
from fedhello.plan import Plan


@ALLOCATORS.register("full")
class FullAllocator(Allocator):
    """Every client trains every layer (FedIT, the homogeneous upper bound; ignores budgets)."""

    respects_budgets = False

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {cid: Plan(tuple(range(self.num_layers))) for cid in budgets}


@ALLOCATORS.register("gd")
class GeometricAllocator(Allocator):
    """GD-HLA: a fixed layer set per budget, given by the configured geometric pattern."""

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        pattern = self.config.pattern
        return {cid: Plan(tier_layers(pattern, self.num_layers, k)) for cid, k in budgets.items()}


@ALLOCATORS.register("random")
class RandomAllocator(Allocator):
    """FedRA-style: each client draws its k layers uniformly at random every round."""

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        uniform = np.ones(self.num_layers)
        return {cid: Plan(sample_layers(rng, uniform, k)) for cid, k in budgets.items()}


@ALLOCATORS.register("rgd")
class RandomizedGeometricAllocator(Allocator):
    """RGD-HLA: each client draws its k layers with probabilities proportional to the pattern's
    collective per-layer counts."""

    def __init__(self, config, num_layers, tier_budgets, lora_rank=8) -> None:  # noqa: ANN001
        super().__init__(config, num_layers, tier_budgets, lora_rank)
        self.counts = pattern_counts(config.pattern, num_layers, tier_budgets)

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {cid: Plan(sample_layers(rng, self.counts, k)) for cid, k in budgets.items()}


@ALLOCATORS.register("fim")
class FisherAllocator(Allocator):
    """FIM-HLA: from round `fim_warmup + 1` on, the server re-estimates layer importance every `fim_every`
    rounds; clients draw layers with probabilities rising with importance level.

    Before the first estimate (and, with `fim_hold: false`, between refreshes, as the official code) the
    `fallback` allocator decides: uniform random here, the GD/RGD pattern in the co-design.
    """

    needs_importance = True

    def __init__(self, config, num_layers, tier_budgets, lora_rank=8) -> None:  # noqa: ANN001
        super().__init__(config, num_layers, tier_budgets, lora_rank)
        self.probabilities: np.ndarray | None = None
        self.refreshed_at: int | None = None
        self.fallback: Allocator = RandomAllocator(config, num_layers, tier_budgets, lora_rank)

    def is_refresh_round(self, round_num: int) -> bool:
        return is_refresh_round(self.config, round_num)

    def wants_importance(self, round_num: int) -> bool:
        return self.is_refresh_round(round_num)

    def set_importance(self, round_num: int, scores: np.ndarray) -> dict[str, Any]:
        self.probabilities, levels = level_probabilities(scores, self.config.fim_levels)
        self.refreshed_at = round_num
        return {"scores": scores.tolist(), "levels": levels.tolist(), "probabilities": self.probabilities.tolist()}

    def uses_importance(self, round_num: int) -> bool:
        if self.probabilities is None:
            return False
        return self.config.fim_hold or round_num == self.refreshed_at

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        if not self.uses_importance(round_num):
            return self.fallback.allocate(round_num, budgets, rng)
        return {cid: Plan(sample_layers(rng, self.probabilities, k)) for cid, k in budgets.items()}

    def state_dict(self) -> dict[str, Any]:
        probabilities = None if self.probabilities is None else self.probabilities.tolist()
        return {"probabilities": probabilities, "refreshed_at": self.refreshed_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        probabilities = state.get("probabilities")
        self.probabilities = None if probabilities is None else np.asarray(probabilities, dtype=np.float64)
        self.refreshed_at = state.get("refreshed_at")


@ALLOCATORS.register("fim+gd")
class FedHelloAllocator(FisherAllocator):
    """Fed-HeLLo co-design: the GD pattern (randomised, RGD, by default) during warm-up, FIM afterwards."""

    def __init__(self, config, num_layers, tier_budgets, lora_rank=8) -> None:  # noqa: ANN001
        super().__init__(config, num_layers, tier_budgets, lora_rank)
        pattern_cls = RandomizedGeometricAllocator if config.randomized else GeometricAllocator
        self.fallback = pattern_cls(config, num_layers, tier_budgets, lora_rank)
