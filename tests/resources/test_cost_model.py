"""The cost model and the conversion of budgets into layer constraints."""

import pytest

from fedhello.resources.cost import BudgetError, CostModel, LayerConstraint, budget_constraint, depth

L = 6


# the arithmetic below is exact: no headroom between predictions and budgets (tested on its own)
pytestmark = pytest.mark.usefixtures("exact_budgets")


def test_budgets_keep_their_slack_below_the_prediction(monkeypatch):
    from fedhello.resources import cost

    monkeypatch.setattr(cost, "SLACK", {"MiB": 0.05, "s": 0.1, "MiB in total": 0.05})
    memory = CostModel(base=10.0, per_depth=10.0, per_layer=0.0)  # top 3: 40 MiB
    assert budget_constraint(L, memory, None, memory_mb=42.0).max_layers == 3  # 40 * 1.05 = 42
    assert budget_constraint(L, memory, None, memory_mb=41.9).max_layers == 2


def synthetic(base, per_depth, per_layer, sets):
    return [(s, base + per_depth * depth(s, L) + per_layer * len(s)) for s in sets]


SETS = [(), (5,), (0,), (3, 4, 5), (0, 1, 2), (0, 2, 4), (0, 1, 5), (2, 3, 4, 5), tuple(range(6))]


def test_depth_is_distance_from_lowest_layer_to_output():
    assert depth((), L) == 0
    assert depth((5,), L) == 1
    assert depth((0, 5), L) == depth((0,), L) == 6


def test_fit_recovers_linear_costs():
    model = CostModel.fit(synthetic(20.0, 30.0, 2.0, SETS), L)
    assert model.base == pytest.approx(20.0)
    assert model.per_depth == pytest.approx(30.0)
    assert model.per_layer == pytest.approx(2.0)
    assert model.margin == pytest.approx(0.0, abs=1e-9)
    assert model.predict((1, 3), L) == pytest.approx(20 + 30 * 5 + 2 * 2)


def test_fit_drops_negative_slopes_and_margin_covers_every_measurement():
    # cost falls with the count in this noisy data: the fit must not predict cheaper sets for more layers
    samples = [(s, 10.0 + 5 * depth(s, L) - 0.5 * len(s) + (0.7 if len(s) == 3 else 0.0)) for s in SETS]
    model = CostModel.fit(samples, L)
    assert model.per_layer >= 0 and model.per_depth > 0
    for layers, cost in samples:
        assert model.predict(layers, L) + model.margin >= cost - 1e-9


def test_budget_picks_the_most_layers_that_fit_at_the_top_then_the_lowest_floor():
    memory = CostModel(base=10.0, per_depth=10.0, per_layer=1.0)
    # 3 layers at the top: 10 + 30 + 3 = 43; 4 at the top: 10 + 40 + 4 = 54
    constraint = budget_constraint(L, memory, None, memory_mb=50.0)
    assert (constraint.max_layers, constraint.min_layer) == (3, 3)
    # a larger budget leaves room to go deeper than the top-k
    constraint = budget_constraint(L, memory, None, memory_mb=60.0, layers=3)
    assert constraint.max_layers == 3
    assert constraint.min_layer == 2  # 10 + 40 + 3 = 53 fits, depth 5 (63) does not
    assert memory.upper(3, constraint.min_layer, L) <= 60.0 < memory.upper(3, constraint.min_layer - 1, L)


def test_memory_and_time_budgets_both_apply():
    memory = CostModel(base=0.0, per_depth=10.0, per_layer=0.0)
    time = CostModel(base=0.1, per_depth=0.1, per_layer=0.0)
    loose_memory = budget_constraint(L, memory, time, memory_mb=1000.0, seconds_per_step=0.35)
    assert loose_memory.max_layers == 2 and loose_memory.min_layer == 4  # time allows depth 2 only


def test_impossible_budgets_are_errors_that_name_the_need():
    memory = CostModel(base=100.0, per_depth=10.0, per_layer=1.0)
    with pytest.raises(BudgetError, match="needs about 111"):
        budget_constraint(L, memory, None, memory_mb=50.0)
    with pytest.raises(BudgetError, match="for 4 layers"):
        budget_constraint(L, memory, None, memory_mb=120.0, layers=4)
    with pytest.raises(BudgetError, match="no cost model"):
        budget_constraint(L, None, None, memory_mb=120.0)


def test_constraint_repair_keeps_the_strategys_layers_that_fit_and_the_count():
    from fedhello.allocation.constraints import repair

    constraint = LayerConstraint(max_layers=3, min_layer=3)
    assert constraint.allows((3, 5)) and not constraint.allows((0, 4)) and not constraint.allows((3, 4, 5, 2))
    assert repair(constraint, (0, 1, 5), L) == (3, 4, 5)  # 5 kept, the count filled from the cheapest
    assert repair(constraint, (0, 4), L) == (4, 5)
    # the allowed range is never exceeded even if the inner plan is larger than the budget
    assert repair(constraint, (0, 1, 2, 3, 4, 5), L) == (3, 4, 5)


def test_allows_uses_the_exact_floor_of_the_sets_size_not_the_largest_counts():
    # fewer layers reach deeper: 2 layers may start at 1, 3 layers only at 3 (the bug: 2 layers judged by 3's floor)
    constraint = LayerConstraint(max_layers=3, min_layer=3, floors=(0, 1, 3))
    assert constraint.allows((1, 5)) and constraint.allows((0,)) and not constraint.allows((2, 4, 5))


# --- recomputation: blocks that recompute their activations move from the depth term to their own ----------------


def synthetic_recompute(base, per_depth, per_layer, per_recompute, plans):
    return [(s, base + per_depth * (depth(s, L) - r) + per_layer * len(s) + per_recompute * r, r) for s, r in plans]


PLANS = [(s, 0) for s in SETS] + [((0, 1, 2, 3, 4, 5), 5), ((0, 5), 5), ((3, 4, 5), 2), ((2, 3, 4, 5), 3)]


def test_fit_recovers_the_recompute_term():
    model = CostModel.fit(synthetic_recompute(20.0, 12.0, 2.0, 0.5, PLANS), L)
    assert (model.base, model.per_depth, model.per_layer, model.per_recompute) == pytest.approx((20, 12, 2, 0.5))
    assert model.predict((0, 5), L, recompute=3) == pytest.approx(20 + 12 * 3 + 2 * 2 + 0.5 * 3)
    # without recomputed samples nothing is learnt about it (and budgets must not plan it)
    assert CostModel.fit(synthetic(20.0, 12.0, 2.0, SETS), L).per_recompute == 0.0


MEMORY = CostModel(base=10.0, per_depth=12.0, per_layer=2.0, per_recompute=0.5)
TIME = CostModel(base=0.10, per_depth=0.03, per_layer=0.0, per_recompute=0.05)


def test_a_memory_budget_only_recomputation_meets_gives_a_recomputing_plan():
    # all 6 layers kept: 10 + 72 + 12 = 94; the budget 40 allows the top 2 kept (10 + 24 + 4 = 38) or, recomputing,
    # every layer: 10 + 12 * (6 - r) + 12 + 0.5 r <= 40 -> r >= 5 (36.5 at r = 5)
    kept = budget_constraint(L, MEMORY, TIME, memory_mb=40.0)
    assert kept.max_layers == 2 and kept.recompute is None and not kept.fits(6, 0)
    constraint = budget_constraint(L, MEMORY, TIME, memory_mb=40.0, recompute=True)
    assert constraint.max_layers == L and constraint.recompute_for(6, 0) == 5
    assert constraint.recompute_for(2, 4) == 0  # what fits kept is not recomputed
    assert constraint.recompute_for(2, 0) == 4  # bottom layers: 10 + 12 * (6 - r) + 4 + 0.5 r <= 40 -> r >= 4
    for count in range(1, L + 1):
        for lowest in range(L - count + 1):
            r = constraint.recompute_for(count, lowest)
            assert r is not None and MEMORY.upper(count, lowest, L, r) <= 40.0
            assert r == 0 or MEMORY.upper(count, lowest, L, r - 1) > 40.0  # the fewest blocks


def test_a_tight_time_budget_refuses_the_recomputing_plans():
    # time: 0.1 + 0.03 d + 0.05 r; 0.3 s allows the top 6 only when r <= 0.4 -> not the 4 blocks memory needs
    constraint = budget_constraint(L, MEMORY, TIME, memory_mb=40.0, seconds_per_step=0.3, recompute=True)
    assert not constraint.fits(6, 0) and constraint.max_layers < L
    for count in range(1, constraint.max_layers + 1):
        for lowest in range(L - count + 1):
            r = constraint.recompute_for(count, lowest)
            if r is not None:
                assert TIME.upper(count, lowest, L, r) <= 0.3 and MEMORY.upper(count, lowest, L, r) <= 40.0


def brute_force_best(values, fits):
    import itertools

    best_value = 0.0
    for n in range(1, len(values) + 1):
        for subset in itertools.combinations(range(len(values)), n):
            value = sum(values[i] for i in subset)
            if fits(n, min(subset)) and value > best_value + 1e-12:
                best_value = value
    return best_value


@pytest.mark.parametrize("seed", range(40))
def test_knapsack_equals_brute_force_when_per_layer_costs_matter(seed):
    # per-layer costs comparable to per-depth ones: fewer layers reach deeper, so a floor per count matters
    import numpy as np

    from fedhello.allocation.knapsack import best_layer_set

    rng = np.random.default_rng(seed)
    memory = CostModel(
        base=5.0,
        per_depth=float(rng.uniform(1, 10)),
        per_layer=float(rng.uniform(3, 15)),
        per_recompute=float(rng.uniform(0, 1)),
    )
    budget = float(rng.uniform(30, 90))
    try:
        constraint = budget_constraint(L, memory, None, memory_mb=budget, recompute=bool(seed % 2))
    except BudgetError:
        return
    values = rng.uniform(0, 1, L).round(3).tolist()
    chosen = best_layer_set(values, constraint.fits)
    assert constraint.allows(chosen)
    assert sum(values[i] for i in chosen) == pytest.approx(brute_force_best(values, constraint.fits))


def test_fill_plans_never_exceed_their_memory_budget():
    from fedhello.config import strategy_options
    from fedhello.methods.fill import FillAllocator

    memory = CostModel(base=5.0, per_depth=4.0, per_layer=9.0)  # 3 layers at the top: 5 + 12 + 27 = 44
    for budget in (30.0, 44.0, 45.0, 60.0):
        constraint = budget_constraint(L, memory, None, memory_mb=budget)
        fill = FillAllocator(strategy_options({"name": "fill"}), L, [L], constraints=[constraint])
        plan = fill.allocate(1, {0: L}, None)[0]
        assert memory.upper(len(plan.layers), min(plan.layers), L) <= budget
        # and it is the most layers that fit: one more at the cheapest place would not
        assert memory.upper(len(plan.layers) + 1, L - len(plan.layers) - 1, L) > budget


# --- the quantization term: total = weights(q) + training cost of the set when loaded in q --------------------------

TRAINING = {"none": CostModel(10.0, 20.0, 1.0), "int8": CostModel(12.0, 22.0, 1.0), "nf4": CostModel(11.0, 21.0, 1.0)}
WEIGHTS = {"none": 200.0, "int8": 80.0, "nf4": 50.0}


def synthetic_profiles():
    from fedhello.resources.measure import Measurement
    from fedhello.resources.profile import Profile

    def profile(q):
        model = TRAINING[q]
        measured = [Measurement(s, model.predict(s, L), 0.01) for s in SETS]
        return Profile(L, "cpu", "synthetic", [2, 8], measured, quantization=q, weights_mb=WEIGHTS[q])

    return {q: profile(q) for q in TRAINING}


def test_total_budget_adds_the_weights_of_the_quantization():
    profiles = synthetic_profiles()
    nf4 = profiles["nf4"]
    assert nf4.total_memory.predict((4, 5), L) == pytest.approx(50 + 11 + 21 * 2 + 2)
    # 140 MiB in total: unquantized weights alone need 200; nf4 leaves 90 for training -> 3 layers, depth 3
    with pytest.raises(BudgetError, match="in total"):
        budget_constraint(L, None, None, total=profiles["none"].total_memory, total_memory_mb=140.0)
    constraint = budget_constraint(L, None, None, total=nf4.total_memory, total_memory_mb=140.0)
    assert constraint.max_layers == 3 and constraint.min_layer == 3


def test_auto_quantization_trains_the_most_depth_and_ties_go_to_the_more_precise(tmp_path):
    from fedhello.config import config_from_dict
    from fedhello.errors import ConfigError
    from fedhello.resources.budgets import tier_constraints

    profiles = synthetic_profiles()
    tiers = [
        {"share": 0.25, "total_memory_mb": 140.0, "quantization": "auto"},  # only nf4 trains anything
        {"share": 0.25, "total_memory_mb": 190.0, "quantization": "auto"},  # int8 reaches depth 4, nf4 all 6
        {"share": 0.25, "total_memory_mb": 1000.0, "quantization": "auto"},  # all fit every layer: none
        {"share": 0.25, "layers": 2},
    ]
    config = config_from_dict({"tiers": tiers})
    constraints = tier_constraints(config, profiles.__getitem__, L)
    assert [t.quantization for t in config.tiers] == ["nf4", "nf4", "none", None]
    assert constraints[0].max_layers == 3 and constraints[2].max_layers == L and constraints[3] is None
    assert config.tiers[0].layers == 3  # written back, as for memory budgets
    # a budget below the smallest weights: one line naming the tier and every quantization it tried
    config = config_from_dict({"tiers": [{"share": 1, "total_memory_mb": 40.0, "quantization": "auto"}]})
    with pytest.raises(ConfigError, match=r"tiers\.0.*none: .*int8: .*nf4: .*quantize"):
        tier_constraints(config, profiles.__getitem__, L)


def test_most_depth_prefers_the_deeper_option_over_the_one_with_more_layers():
    from fedhello.resources.cost import LayerConstraint, most_depth

    # with per-layer costs or recomputation fewer layers may reach deeper: `nf4` trains 1 layer down to layer 0
    # (depth 6) but at most 3 layers; `int8` trains 4 layers, none below layer 2 (depth 4)
    deep = LayerConstraint(max_layers=3, min_layer=3, floors=(0, 1, 3))
    wide = LayerConstraint(max_layers=4, min_layer=2, floors=(2, 2, 2, 2))
    assert most_depth({"int8": wide, "nf4": deep}, 6) == "nf4"
    same = LayerConstraint(max_layers=4, min_layer=2, floors=(2, 2, 2, 2))
    assert most_depth({"none": wide, "int8": same}, 6) == "none"  # a tie goes to the first (more precise) option
