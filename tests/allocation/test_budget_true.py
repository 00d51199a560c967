"""Budget-true allocators: the exact layer knapsack, `fill` and Fed-pilot's values."""

import itertools

import numpy as np
import pytest

from fedhello.allocation import ALLOCATORS
from fedhello.allocation.knapsack import best_layer_set, count_fits
from fedhello.config import strategy_options
from fedhello.plan import ClientUpdate, Plan
from fedhello.resources.cost import CostModel, budget_constraint

# budgets in exact arithmetic: no headroom between predictions and budgets
pytestmark = pytest.mark.usefixtures("exact_budgets")

L = 6
MEMORY = CostModel(base=15.0, per_depth=27.2, per_layer=3.66, margin=4.4)  # the default task's measured fit


def brute_force(values, fits):
    best_value = -1.0
    for n in range(1, len(values) + 1):
        for subset in itertools.combinations(range(len(values)), n):
            if fits(n, min(subset)):
                value = sum(values[i] for i in subset)
                if value > best_value + 1e-12:
                    best_value = value
    return best_value


@pytest.mark.parametrize("budget", [60.0, 85.0, 115.0, 150.0, 230.0])
def test_knapsack_is_exact_against_brute_force(budget):
    constraint = budget_constraint(L, MEMORY, None, memory_mb=budget)
    rng = np.random.default_rng(int(budget))
    for _ in range(20):
        values = rng.random(L).tolist()
        chosen = best_layer_set(values, constraint.fits)
        assert constraint.fits(len(chosen), min(chosen))
        assert sum(values[i] for i in chosen) == pytest.approx(brute_force(values, constraint.fits))


def test_memory_budgets_force_the_top_layers():
    # cost follows the lowest trained layer: a budget for 2 layers at the top affords no other 2 layers
    two = budget_constraint(L, MEMORY, None, memory_mb=85.0)
    assert (two.max_layers, two.min_layer) == (2, 4)
    assert best_layer_set([5.0, 4, 3, 2, 1, 0.5], two.fits) == (4, 5)


def test_worthless_layers_are_not_added():
    # the docstring's tie-break: among equal values the fewest layers, so value-0 layers only add cost
    assert best_layer_set([1.0, 0, 0, 0, 0, 2], count_fits(4)) == (0, 5)
    assert best_layer_set([0.0] * L, count_fits(2)) == ()


def test_count_budget_takes_the_most_valuable_layers_anywhere():
    assert best_layer_set([5.0, 1, 4, 1, 1, 3], count_fits(3)) == (0, 2, 5)
    assert best_layer_set([1.0] * L, count_fits(3)) == (3, 4, 5)  # ties: the cheapest (deepest) set


def allocator(name, constraints, **options):
    schedule = {"fim_warmup": 1, "fim_every": 2} if name == "fedpilot" else {}
    config = strategy_options({"name": name, **schedule, **options})
    return ALLOCATORS.get(name)(config, L, [2, 3, 6], constraints=constraints)


def test_fill_trains_every_affordable_layer_from_the_top():
    constraints = [budget_constraint(L, MEMORY, None, memory_mb=85.0), budget_constraint(L, MEMORY, None, 115.0), None]
    plans = allocator("fill", constraints).allocate(1, {0: 2, 1: 3, 2: 6}, np.random.default_rng(0))
    assert plans[0] == Plan((4, 5)) and plans[1] == Plan((3, 4, 5)) and plans[2] == Plan(tuple(range(L)))


def test_fedpilot_values_mix_global_scores_and_the_clients_own_gradient_norms():
    pilot = allocator("fedpilot", [None, None], value_local_weight=0.5, value_decay=0.0)
    assert pilot.wants_importance(2) and not pilot.wants_importance(3) and pilot.wants_importance(4)
    pilot.set_importance(2, np.array([6.0, 1, 1, 1, 1, 2]))
    # before a client reports, its values are the global ones: layers 0 and 5 for a 2-layer budget
    assert pilot.allocate(2, {0: 2}, np.random.default_rng(0))[0] == Plan((0, 5))
    report = ClientUpdate(1, Plan((1, 2, 3)), {}, 10, {"grad_norm.1": 0.1, "grad_norm.2": 9.0, "grad_norm.3": 0.1})
    pilot.observe(2, [report])
    plans = pilot.allocate(3, {0: 2, 1: 2}, np.random.default_rng(0))
    assert plans[0] == Plan((0, 5)) and plans[1] == Plan((0, 2))  # client 1's own large gradients pull in layer 2
    restored = allocator("fedpilot", [None, None], value_local_weight=0.5, value_decay=0.0)
    restored.load_state_dict(pilot.state_dict())
    assert restored.allocate(3, {0: 2, 1: 2}, np.random.default_rng(0)) == plans


def test_fedpilot_score_is_the_rms_gradient_norm_per_layer():
    import torch

    pilot = allocator("fedpilot", [None])
    fisher = {"a": torch.full((2, 2), 1.0), "b": torch.full((3,), 3.0), "head": torch.ones(4)}
    scores = pilot.score_layers(fisher, {"a": 0, "b": 2, "head": -1})
    assert scores.tolist() == pytest.approx([2.0, 0.0, 3.0, 0.0, 0.0, 0.0])


# recomputation: memory 10 + 12 * depth kept + 2 * layers + 0.5 * recomputed; time 0.1 + 0.03 * depth + 0.05 * r
RC_MEMORY = CostModel(base=10.0, per_depth=12.0, per_layer=2.0, per_recompute=0.5)
RC_TIME = CostModel(base=0.10, per_depth=0.03, per_layer=0.0, per_recompute=0.05)


def test_under_a_memory_budget_only_recomputation_meets_fill_recomputes_every_layer():
    constraint = budget_constraint(L, RC_MEMORY, RC_TIME, memory_mb=40.0, recompute=True)
    plan = allocator("fill", [constraint], recompute=True).allocate(1, {0: 2}, np.random.default_rng(0))[0]
    assert plan == Plan(tuple(range(L)), recompute=5)  # all 6 layers, the fewest blocks that fit: 36.5 MiB
    kept = budget_constraint(L, RC_MEMORY, RC_TIME, memory_mb=40.0)
    assert allocator("fill", [kept]).allocate(1, {0: 2}, np.random.default_rng(0))[0] == Plan((4, 5))


def test_under_a_tight_time_budget_fill_does_not_recompute():
    constraint = budget_constraint(L, RC_MEMORY, RC_TIME, memory_mb=40.0, seconds_per_step=0.2, recompute=True)
    plan = allocator("fill", [constraint], recompute=True).allocate(1, {0: 2}, np.random.default_rng(0))[0]
    assert plan.recompute == 0 and plan.layers == (4, 5)  # depth 2 kept: 0.16 s; any recomputation: over 0.2


def test_budget_true_importance_keeps_its_layers_by_recomputing():
    # fim+gd chooses layers 0 and 5 for a 2-layer client; a 40 MiB budget affords them only recomputing 5 blocks
    from fedhello.allocation.constraints import DepthAwareAllocator

    constraint = budget_constraint(L, RC_MEMORY, RC_TIME, memory_mb=40.0, recompute=True)
    inner = ALLOCATORS.get("gd")(strategy_options({"name": "gd", "pattern": "bottleneck"}), L, [2, 3, 6])
    plan = DepthAwareAllocator(inner, [constraint]).allocate(1, {0: 2}, np.random.default_rng(0))[0]
    assert plan == Plan((0, 5), recompute=4)
    # without recomputation the same budget keeps one of its layers and fills up from the top
    kept = budget_constraint(L, RC_MEMORY, RC_TIME, memory_mb=40.0)
    plan = DepthAwareAllocator(inner, [kept]).allocate(1, {0: 2}, np.random.default_rng(0))[0]
    assert plan == Plan((4, 5))
