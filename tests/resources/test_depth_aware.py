"""DepthAwareAllocator: any strategy's plans are kept at or above each client's lowest affordable layer."""

import numpy as np

from fedhello.allocation import ALLOCATORS
from fedhello.allocation.constraints import DepthAwareAllocator
from fedhello.config import strategy_options
from fedhello.resources.cost import LayerConstraint

L, BUDGETS = 6, [3, 4, 6]


def allocator(name, constraints):
    patterned = "pattern" in ALLOCATORS.get(name).Options.model_fields
    options = strategy_options({"name": name, **({"pattern": "bottleneck"} if patterned else {})})
    inner = ALLOCATORS.get(name)(options, L, BUDGETS)
    return inner, DepthAwareAllocator(inner, constraints)


def test_every_plan_respects_its_clients_floor_for_every_strategy():
    constraints = [LayerConstraint(3, 3), LayerConstraint(4, 1), None, LayerConstraint(6, 0)]
    budgets = {0: 3, 1: 4, 2: 3, 3: 6}
    for name in ("gd", "rgd", "random", "fim+gd"):
        _, wrapped = allocator(name, constraints)
        for round_num in range(1, 6):
            plans = wrapped.allocate(round_num, budgets, np.random.default_rng(round_num))
            for cid, plan in plans.items():
                assert len(plan.layers) == budgets[cid]
                if constraints[cid] is not None:
                    assert constraints[cid].allows(plan.layers), (name, cid, plan.layers)


def test_compliant_plans_and_unconstrained_clients_are_untouched():
    inner, wrapped = allocator("rgd", [None, LayerConstraint(3, 0), None])
    budgets = {0: 3, 1: 3, 2: 4}
    expected = inner.allocate(2, budgets, np.random.default_rng(5))
    assert wrapped.allocate(2, budgets, np.random.default_rng(5)) == expected


def test_bottleneck_plan_is_moved_above_the_floor():
    _, wrapped = allocator("gd", [LayerConstraint(3, 3)])
    plan = wrapped.allocate(1, {0: 3}, np.random.default_rng(0))[0]
    assert plan.layers == (3, 4, 5)  # bottleneck wanted 0 1 5: the two shallow layers move to 3 and 4


def test_importance_calls_reach_the_inner_strategy():
    inner, wrapped = allocator("fim+gd", [None])
    assert wrapped.wants_importance(2) == inner.wants_importance(2)
    wrapped.set_importance(2, np.arange(L, dtype=float))
    assert inner.probabilities is not None
    assert wrapped.state_dict() == inner.state_dict()
