"""Budget-true allocators: every plan fits its client's budget by construction, using the measured cost
model (cost follows the lowest trained layer) instead of a layer count alone.

- `fill`: every client trains the most layers its budget affords, from the output down (for a count-only
  tier: its top k layers). Under memory budgets this is also what a value-maximising knapsack picks when
  every layer has the same value.
- `fedpilot`: Fed-pilot (arXiv 2410.10200), as far as it could be recovered: per client and round a 0/1
  knapsack over LoRA layers under the client's memory budget, maximising the sum of layer values; a layer's
  value mixes a global part (the server's RMS per-sample gradient norm of the layer on the proxy set,
  refreshed on the FIM schedule) and a local part (the client's own gradient norms of the layers it last
  trained, reported with its update). Pair it with the `fedpilot` aggregator. Interpretations are listed in
  docs/compare.md.

Both need each client's `LayerConstraint` (memory/time budget tiers) and fall back to the tier's layer
count for count-only tiers. With `strategy.recompute` the constraint also admits deeper sets that recompute
some blocks' activations, and each plan carries the fewest recomputed blocks with which it fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedhello.allocation.base import ALLOCATORS, Allocator
from fedhello.allocation.constraints import fit_plan
from fedhello.allocation.importance import is_refresh_round
from fedhello.allocation.knapsack import Fits, best_layer_set, count_fits
from fedhello.config import StrategyConfig
from fedhello.plan import ClientUpdate, Plan
from fedhello.resources.cost import LayerConstraint

GRAD_NORM = "grad_norm."  # prefix of the per-layer gradient norms a client reports (training/trainer.py)


class KnapsackAllocator(Allocator):
    """Base: each sampled client gets `best_layer_set(values, fits)`; subclasses define the values."""

    needs_constraints = True

    def __init__(
        self,
        config: StrategyConfig,
        num_layers: int,
        tier_budgets: list[int],
        lora_rank: int = 8,
        constraints: Sequence[LayerConstraint | None] = (),
    ) -> None:
        super().__init__(config, num_layers, tier_budgets, lora_rank)
        self.constraints = list(constraints)

    def constraint(self, client_id: int) -> LayerConstraint | None:
        return self.constraints[client_id] if client_id < len(self.constraints) else None

    def fits(self, client_id: int, budget: int) -> Fits:
        """A budget tier: its constraint alone (a declared layer count is its `max_layers`; a count written from
        the budget is what fits with activations kept, which recomputation may exceed). A count-only tier: the
        count."""
        constraint = self.constraint(client_id)
        if constraint is None:
            return count_fits(budget)
        return constraint.fits

    def values(self, client_id: int) -> np.ndarray:
        return np.ones(self.num_layers)

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {
            cid: fit_plan(self.constraint(cid), Plan(best_layer_set(self.values(cid).tolist(), self.fits(cid, k))))
            for cid, k in budgets.items()
        }


@ALLOCATORS.register("fill")
class FillAllocator(KnapsackAllocator):
    """Every client trains all the layers its budget affords, from the output down."""


@ALLOCATORS.register("fedpilot")
class FedPilotAllocator(KnapsackAllocator):
    """Fed-pilot: knapsack over layers with gradient-norm values (see the module docstring)."""

    needs_importance = True

    def __init__(self, config, num_layers, tier_budgets, lora_rank=8, constraints=()) -> None:  # noqa: ANN001
        super().__init__(config, num_layers, tier_budgets, lora_rank, constraints)
        self.global_values: np.ndarray | None = None
        self.local_values: dict[int, dict[int, float]] = {}

    def wants_importance(self, round_num: int) -> bool:
        return is_refresh_round(self.config, round_num)

    def score_layers(self, fisher: dict[str, torch.Tensor], layout: dict[str, int]) -> np.ndarray:
        """RMS per-sample gradient norm of each layer: sqrt of the trace of its empirical Fisher."""
        traces = np.zeros(self.num_layers)
        for name, diagonal in fisher.items():
            if layout[name] >= 0:
                traces[layout[name]] += float(diagonal.sum())
        return np.sqrt(traces)

    def set_importance(self, round_num: int, scores: np.ndarray) -> dict[str, Any]:
        self.global_values = _normalised(scores)
        return {"scores": scores.tolist(), "values": self.global_values.tolist()}

    def observe(self, round_num: int, updates: Sequence[ClientUpdate]) -> None:
        """Keep each client's latest gradient norms (moving average over its rounds) as its local part."""
        decay = self.config.value_decay
        for update in updates:
            seen = self.local_values.setdefault(update.client_id, {})
            for key, value in update.metrics.items():
                if key.startswith(GRAD_NORM):
                    layer = int(key[len(GRAD_NORM):])
                    seen[layer] = value if layer not in seen else decay * seen[layer] + (1 - decay) * value

    def values(self, client_id: int) -> np.ndarray:
        base = self.global_values if self.global_values is not None else np.ones(self.num_layers)
        local = self.local_values.get(client_id, {})
        if not local:
            return base
        mixed = base.copy()
        known = sorted(local)
        scaled = _normalised(np.array([local[i] for i in known]))
        weight = self.config.value_local_weight
        for layer, value in zip(known, scaled, strict=True):
            mixed[layer] = (1 - weight) * base[layer] + weight * value
        return mixed

    def state_dict(self) -> dict[str, Any]:
        return {
            "global_values": None if self.global_values is None else self.global_values.tolist(),
            "local_values": {str(c): {str(k): v for k, v in d.items()} for c, d in self.local_values.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        values = state.get("global_values")
        self.global_values = None if values is None else np.asarray(values, dtype=np.float64)
        self.local_values = {
            int(c): {int(k): float(v) for k, v in d.items()} for c, d in (state.get("local_values") or {}).items()
        }


def _normalised(values: np.ndarray) -> np.ndarray:
    """Values divided by their mean (all ones when they are all zero), so parts of different scales mix."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean()) if values.size else 0.0
    return values / mean if mean > 0 else np.ones_like(values)
