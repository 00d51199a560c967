"""The allocator interface: decide each sampled client's `Plan` for a round."""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from fedhello import components
from fedhello.allocation.importance import layer_scores
from fedhello.config import StrategyConfig
from fedhello.plan import ClientUpdate, Plan, Upload
from fedhello.registry import Registry
from fedhello.resources.cost import LayerConstraint
from fedhello.training.hooks import ClientHook


class Allocator(ABC):
    """Heterogeneous LoRA allocation: decides each sampled client's `Plan` for a round. Allocators are pure
    decision-makers: they never touch models or the network.

    Class-level declarations, read when the config is loaded (before anything is built):

      Options            the strategy's options model: `strategy:` is validated by it (a `StrategyConfig`
                         subclass adding the strategy's own fields)
      client_hook        what clients do around their training for this strategy (`ClientHook`; none by default)
      uploads            the kinds of upload its plans produce (`Upload`)
      needs_importance   it needs Fisher scores, so the proxy set must not be empty
      respects_budgets   False for baselines that give every client the whole model whatever its tier (FedIT,
                         FFA-LoRA), which the CLI and `fedhello strategies` say

    A subclass implements `allocate` and may override, each with a default here:

      wants_importance(round)                  ask the server for per-layer importance before a round
      score_layers(fisher, layout)             turn the server's empirical Fisher into per-layer scores
      set_importance(round, scores)            receive those scores; return what to log
      observe(round, updates)                  see the round's accepted updates after aggregation
      state_dict() / load_state_dict(state)    state carried across rounds (JSON-able), saved and restored by
                                               checkpoints

    Every allocator is built the same way: its options (the `strategy:` section), the model's `num_layers`,
    every tier's layer budget, the adapter's LoRA rank (the most a rank-heterogeneous method may hand out) and
    each client's budget constraint (`constraints[client_id]`, None for a count-only tier), which budget-true
    allocators plan with and the others ignore.
    """

    Options: ClassVar[type[StrategyConfig]] = StrategyConfig
    client_hook: ClassVar[type[ClientHook]] = ClientHook
    uploads: ClassVar[frozenset[Upload]] = frozenset({Upload.FULL})
    needs_importance: ClassVar[bool] = False
    respects_budgets: ClassVar[bool] = True

    def __init__(
        self,
        config: StrategyConfig,
        num_layers: int,
        tier_budgets: list[int],
        lora_rank: int = 8,
        constraints: Sequence[LayerConstraint | None] = (),
    ) -> None:
        self.config = config
        self.num_layers = num_layers
        self.tier_budgets = list(tier_budgets)
        self.lora_rank = lora_rank
        self.constraints = list(constraints)

    def constraint(self, client_id: int) -> LayerConstraint | None:
        """A client's budget constraint (None: a count-only tier, or none given)."""
        return self.constraints[client_id] if client_id < len(self.constraints) else None

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


ALLOCATORS = typing.cast(Registry[type[Allocator]], components.ALLOCATORS)  # filled by the method folders


def sample_layers(rng: np.random.Generator, probabilities: np.ndarray, budget: int) -> tuple[int, ...]:
    """Draw `budget` distinct layers with the given probabilities (numpy's weighted sampling without
    replacement, as the official code)."""
    p = np.asarray(probabilities, dtype=np.float64)
    p = p / p.sum()
    budget = min(budget, int(np.count_nonzero(p)))
    return tuple(int(i) for i in rng.choice(len(p), size=budget, replace=False, p=p))
