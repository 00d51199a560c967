"""Budget-true allocation for any strategy: every plan fits its client's `LayerConstraint`.

A budget limits what a layer set may cost, and cost follows the set's lowest trained layer (and, when
recomputation is allowed, how many blocks recompute their activations; see `fedhello.resources.cost`). The
wrapper lets the inner strategy choose as usual and keeps its plan when that plan fits, with the recomputation
the constraint asks for. A plan that does not fit is replaced by the fitting set of at most as many layers that
keeps the most of the strategy's chosen layers (an exact knapsack, `best_layer_set`), so an importance-driven
strategy still decides which layers a weak client trains wherever the budget allows it. With no constraints the
wrapped strategy behaves exactly as before.

`KnapsackAllocator` is the base of the strategies that are budget-true by construction (fill, Fed-pilot): they
pick each client's most valuable fitting set directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fedhello.allocation.base import Allocator
from fedhello.allocation.knapsack import Fits, best_layer_set, count_fits
from fedhello.plan import Plan
from fedhello.resources.cost import LayerConstraint

# value of a layer the inner strategy did not choose, relative to 1 for one it chose: small enough that no
# number of them outweighs one chosen layer, positive so that a repaired plan keeps the strategy's count
_UNCHOSEN_VALUE = 1e-3


def fit_plan(constraint: LayerConstraint | None, plan: Plan) -> Plan:
    """`plan` with the recomputation its constraint asks for its layer set (unchanged when there is no constraint
    or the set fits with activations kept). The caller makes sure the set fits."""
    if constraint is None or not plan.layers:
        return plan
    blocks = constraint.recompute_for(len(plan.layers), min(plan.layers))
    return replace(plan, recompute=blocks) if blocks else plan


def repair(constraint: LayerConstraint, layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
    """The fitting set of at most `len(layers)` layers that keeps the most of `layers`, then the shallowest-cost
    one (`best_layer_set`'s tie-break)."""
    chosen = set(layers)
    values = [1.0 if i in chosen else _UNCHOSEN_VALUE for i in range(num_layers)]
    budget = len(chosen)
    return best_layer_set(values, lambda count, lowest: count <= budget and constraint.fits(count, lowest))


class DepthAwareAllocator(Allocator):
    """`inner`'s plans, fitted to each client's constraint (`constraints[client_id]`, None = free)."""

    def __init__(self, inner: Allocator, constraints: Sequence[LayerConstraint | None]) -> None:
        super().__init__(inner.config, inner.num_layers, inner.tier_budgets, inner.lora_rank, constraints)
        self.inner = inner

    def allocate(self, round_num: int, budgets: dict[int, int], rng: np.random.Generator) -> dict[int, Plan]:
        plans = self.inner.allocate(round_num, budgets, rng)
        return {cid: self._fit(cid, plan) for cid, plan in plans.items()}

    def _fit(self, client_id: int, plan: Plan) -> Plan:
        constraint = self.constraint(client_id)
        if constraint is None:
            return plan
        if not constraint.allows(plan.layers):
            layers = repair(constraint, plan.layers, self.num_layers)
            ranks = {i: plan.ranks.get(i, max(plan.ranks.values())) for i in layers} if plan.ranks else None
            plan = replace(plan, layers=layers, ranks=ranks)
        return fit_plan(constraint, plan)

    def wants_importance(self, round_num: int) -> bool:
        return self.inner.wants_importance(round_num)

    def score_layers(self, fisher, layout):  # noqa: ANN001
        return self.inner.score_layers(fisher, layout)

    def set_importance(self, round_num: int, scores: np.ndarray) -> dict[str, Any]:
        return self.inner.set_importance(round_num, scores)

    def observe(self, round_num, updates) -> None:  # noqa: ANN001
        self.inner.observe(round_num, updates)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


class KnapsackAllocator(Allocator):
    """Base of budget-true allocators: each sampled client gets `best_layer_set(values, fits)` -- the most valuable
    layer set its budget affords, with the recomputation its constraint asks for. A budget tier's constraint decides
    what fits (recomputation may exceed the count written from its budget); a count-only tier fits its count.
    Subclasses define the layer values (`values`, default: all equal, so the most layers from the output down)."""

    def fits(self, client_id: int, budget: int) -> Fits:
        """What a client's plan may be: its budget constraint, else its tier's layer count."""
        constraint = self.constraint(client_id)
        return count_fits(budget) if constraint is None else constraint.fits

    def values(self, client_id: int) -> np.ndarray:
        """Per-layer values of a client's knapsack."""
        return np.ones(self.num_layers)

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {
            cid: fit_plan(self.constraint(cid), Plan(best_layer_set(self.values(cid).tolist(), self.fits(cid, k))))
            for cid, k in budgets.items()
        }
