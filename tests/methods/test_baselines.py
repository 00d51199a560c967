"""The defining rule of every baseline allocator."""

import numpy as np
import pytest

from fedhello.allocation import ALLOCATORS
from fedhello.allocation.rank import budget_rank
from fedhello.config import strategy_options
from fedhello.errors import ConfigError
from fedhello.methods.legend import depth_ranks

L, BUDGETS = 6, [3, 4, 6]
CLIENTS = {0: 3, 1: 4, 2: 6, 3: 3, 4: 6}  # client -> layer budget (its tier's)


def make(name, **kwargs):
    return ALLOCATORS.get(name)(strategy_options({"name": name}), L, BUDGETS, **kwargs)


def plans_of(name, round_num=1, **kwargs):
    return make(name, **kwargs).allocate(round_num, CLIENTS, np.random.default_rng(0))


def test_straggler_gives_everyone_the_weakest_budget_on_fixed_alternate_layers():
    first, later = plans_of("straggler", 1), plans_of("straggler", 7)
    assert set(first) == set(CLIENTS)
    assert {p.layers for p in first.values()} == {(0, 2, 4)}  # 3 of 6, evenly spread, for every tier
    assert first == later


def test_exclusive_only_strongest_tier_trains_everything():
    plans = plans_of("exclusive")
    assert set(plans) == {2, 4}
    assert all(p.layers == tuple(range(L)) and p.ranks is None for p in plans.values())
    none_strong = make("exclusive").allocate(1, {0: 3, 1: 4}, np.random.default_rng(0))
    assert none_strong == {}


def test_exclusive_refuses_tiers_that_cannot_train_the_whole_model():
    """Published rule: only clients able to train the whole model take part. With budgets 3/4/5 of 6 the old
    allocator gave all 6 layers to the 5-layer tier, over its budget."""
    with pytest.raises(ConfigError) as info:
        ALLOCATORS.get("exclusive")(strategy_options({"name": "exclusive"}), L, [3, 4, 5])
    assert "'tiers'" in str(info.value) and "all 6 layers" in str(info.value)


def test_tier_rank_trains_all_layers_at_a_rank_growing_with_the_budget():
    plans = plans_of("tier_rank", lora_rank=8)
    for cid, plan in plans.items():
        assert plan.layers == tuple(range(L))
        assert set(plan.ranks) == set(range(L)) and len(set(plan.ranks.values())) == 1
        assert plan.ranks[0] == budget_rank(8, CLIENTS[cid], L)
    assert plans[0].ranks[0] < plans[1].ranks[0] < plans[2].ranks[0] == 8


@pytest.mark.parametrize("rank", [1, 4, 16])
def test_budget_rank_is_within_1_and_r_max_and_monotone(rank):
    ranks = [budget_rank(rank, k, L) for k in range(1, L + 1)]
    assert ranks == sorted(ranks) and ranks[0] >= 1 and ranks[-1] == rank


def test_ffa_freezes_a_everywhere_and_trains_b_on_all_layers():
    for plan in plans_of("ffa").values():
        assert plan.layers == tuple(range(L)) and not plan.train_lora_a and plan.train_lora_b


def test_legend_tunes_the_last_k_layers_with_ranks_rising_toward_the_output():
    plans = plans_of("legend", lora_rank=8)
    profile = depth_ranks(8, L)
    assert [profile[i] for i in range(L)] == sorted(profile.values()) and profile[L - 1] == 8
    for cid, plan in plans.items():
        k = CLIENTS[cid]
        assert plan.layers == tuple(range(L - k, L))
        assert plan.ranks == {i: profile[i] for i in plan.layers}


def test_plan_flags_round_trip_json():
    from fedhello.plan import Plan

    plan = Plan((1, 2), ranks={1: 2, 2: 3}, train_lora_a=False)
    assert Plan.from_json(plan.to_json()) == plan
    assert "train_lora_a" not in Plan((1,)).to_json()
