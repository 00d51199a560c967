"""FIM-HLA's allocator: clients draw layers with probabilities rising with their Fisher-importance level."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedhello.allocation import ALLOCATORS, Allocator, sample_layers
from fedhello.allocation.importance import level_probabilities
from fedhello.methods.fedra import RandomAllocator
from fedhello.methods.fim.options import FisherOptions
from fedhello.plan import Plan


@ALLOCATORS.register("fim")
class FisherAllocator(Allocator):
    """FIM-HLA: from round `fim_warmup + 1` on, the server re-estimates layer importance every `fim_every`
    rounds; clients draw layers with probabilities rising with importance level.

    Before the first estimate (and, with `fim_hold: false`, between refreshes, as the official code) the
    `fallback` allocator decides: uniform random here, the GD/RGD pattern in the co-design.
    """

    Options = FisherOptions
    needs_importance = True

    def __init__(self, config, num_layers, tier_budgets, lora_rank=8, constraints=()) -> None:  # noqa: ANN001
        super().__init__(config, num_layers, tier_budgets, lora_rank, constraints)
        self.probabilities: np.ndarray | None = None
        self.refreshed_at: int | None = None
        self.fallback: Allocator = RandomAllocator(config, num_layers, tier_budgets, lora_rank, constraints)

    def is_refresh_round(self, round_num: int) -> bool:
        return self.config.is_refresh_round(round_num)

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
