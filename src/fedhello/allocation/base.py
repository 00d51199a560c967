"""The allocator interface: decide each sampled client's `Plan` for a round."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from fedhello.allocation.importance import layer_scores
from fedhello.config import StrategyConfig
from fedhello.plan import ClientUpdate, Plan, Upload
from fedhello.registry import Registry


class Allocator(ABC):
    """Heterogeneous LoRA allocation. `budgets` maps each sampled client to how many layers it can train.

    Allocators are pure decision-makers: they never touch models or the network. Those that need layer
    importance say so through `wants_importance`, and the server hands them scores via `set_importance`.

    Class-level declarations, read when the config is loaded (before anything is built):
    `uploads` -- the kinds of upload its plans produce; `needs_importance` -- it needs Fisher scores, so the
    proxy set must not be empty; `respects_budgets` -- False for baselines that give every client the whole
    model whatever its tier (FedIT, FFA-LoRA), which the CLI and `fedhello strategies` say.

    A subclass implements `allocate` and may override, each with a default here:

      wants_importance(round) / set_importance(round, scores)  ask the server for per-layer importance (FIM)
                                                                 before a round, and receive it
      state_dict() / load_state_dict(state)                     state carried across rounds (JSON-able),
                                                                 saved and restored by checkpoints

    It is built with `strategy` (the `strategy:` config section), the model's `num_layers`, every tier's
    layer budget, and the adapter's LoRA rank (the most a rank-heterogeneous method may hand out).
    """

    uploads: ClassVar[frozenset[Upload]] = frozenset({Upload.FULL})
    needs_importance: ClassVar[bool] = False
    respects_budgets: ClassVar[bool] = True
    needs_constraints: ClassVar[bool] = False  # built with each client's budget constraint (knapsack allocators)

    def __init__(self, config: StrategyConfig, num_layers: int, tier_budgets: list[int], lora_rank: int = 8) -> None:
        self.config = config
        self.num_layers = num_layers
        self.tier_budgets = list(tier_budgets)
        self.lora_rank = lora_rank

    @abstractmethod
    def allocate(self, round_num: int, budgets: dict[int, int], rng: np.random.Generator) -> dict[int, Plan]:
        """Plans for the sampled clients of round `round_num` (1-based)."""

    def wants_importance(self, round_num: int) -> bool:
        """Whether the server should estimate layer importance before allocating this round."""
        return False

    def score_layers(self, fisher: dict[str, torch.Tensor], layout: dict[str, int]) -> np.ndarray:
        """Per-layer importance from the proxy set's empirical Fisher diagonal (computed by the server when
        `wants_importance`); the default is FIM-HLA's score (sum of the Frobenius norms per layer)."""
        return layer_scores(fisher, layout, self.num_layers)

    def set_importance(self, round_num: int, scores: np.ndarray) -> dict[str, Any]:
        """Receive per-layer importance scores; returns what to log (e.g. the new probabilities)."""
        return {}

    def observe(self, round_num: int, updates: Sequence[ClientUpdate]) -> None:
        """See the round's accepted updates (their metrics, e.g. gradient norms) after aggregation."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """State carried across rounds (stateless allocators: empty)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (stateless allocators have nothing to restore)."""
        return None


ALLOCATORS: Registry[type[Allocator]] = Registry("strategy", "strategy.name")


def sample_layers(rng: np.random.Generator, probabilities: np.ndarray, budget: int) -> tuple[int, ...]:
    """Draw `budget` distinct layers with the given probabilities (numpy's weighted sampling without
    replacement, as the official code)."""
    p = np.asarray(probabilities, dtype=np.float64)
    p = p / p.sum()
    budget = min(budget, int(np.count_nonzero(p)))
    return tuple(int(i) for i in rng.choice(len(p), size=budget, replace=False, p=p))
