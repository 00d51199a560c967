"""Depth-aware allocation: wrap any strategy so that every plan respects its client's `LayerConstraint`.

A budget limits the *lowest* trained layer (cost follows depth, see `fedhello.resources.cost`), so the
wrapper lets the inner strategy choose as usual and then moves any layer below the client's floor to the
shallowest allowed layer not already chosen. Plans that already comply are left untouched, so with no
constraints (or floors of 0) the wrapped strategy behaves exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from fedhello.allocation.base import Allocator
from fedhello.plan import Plan
from fedhello.resources.cost import LayerConstraint


class DepthAwareAllocator(Allocator):
    """`inner`'s plans, repaired to each client's constraint (`constraints[client_id]`, None = free)."""

    def __init__(self, inner: Allocator, constraints: Sequence[LayerConstraint | None]) -> None:
        super().__init__(inner.config, inner.num_layers, inner.tier_budgets, inner.lora_rank)
        self.inner = inner
        self.constraints = list(constraints)

    def allocate(self, round_num: int, budgets: dict[int, int], rng: np.random.Generator) -> dict[int, Plan]:
        plans = self.inner.allocate(round_num, budgets, rng)
        return {cid: self._fit(cid, plan) for cid, plan in plans.items()}

    def _fit(self, client_id: int, plan: Plan) -> Plan:
        constraint = self.constraints[client_id] if client_id < len(self.constraints) else None
        if constraint is None or constraint.allows(plan.layers):
            return plan
        layers = constraint.repair(plan.layers, self.num_layers)
        ranks = {i: plan.ranks.get(i, max(plan.ranks.values())) for i in layers} if plan.ranks else None
        return replace(plan, layers=layers, ranks=ranks)

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
