import numpy as np
import pytest

from fedhello.allocation import ALLOCATORS
from fedhello.allocation.importance import importance_levels, level_probabilities
from fedhello.config import strategy_options
from fedhello.patterns import pattern_counts


def make(name: str, num_layers: int = 12, budgets=(6, 9, 12), **kwargs):
    return ALLOCATORS.get(name)(strategy_options({"name": name, **kwargs}), num_layers, list(budgets))


def test_registry_has_the_paper_strategies_and_references():
    assert {"gd", "rgd", "fim", "fim+gd", "random", "full"} <= set(ALLOCATORS.names())


def test_gd_gives_each_budget_its_pattern_every_round():
    allocator = make("gd", pattern="bottleneck")
    rng = np.random.default_rng(0)
    for round_num in (1, 7):
        plans = allocator.allocate(round_num, {0: 6, 1: 9, 2: 12}, rng)
        assert plans[0].layers == (0, 1, 2, 9, 10, 11)
        assert plans[1].layers == (0, 1, 2, 3, 4, 8, 9, 10, 11)
        assert plans[2].layers == tuple(range(12))


def test_full_ignores_budgets():
    plans = make("full").allocate(1, {0: 6, 1: 9}, np.random.default_rng(0))
    assert all(p.layers == tuple(range(12)) for p in plans.values())


@pytest.mark.parametrize("budget", [1, 6])
def test_rgd_frequencies_follow_pattern_counts(budget):
    """Single draws (k=1) are exactly proportional to counts/27; k>1 draws still rank layers by count."""
    allocator = make("rgd", pattern="bottleneck")
    rng = np.random.default_rng(1234)
    trials = 20000
    freq = np.zeros(12)
    for _ in range(trials):
        for layer in allocator.allocate(1, {0: budget}, rng)[0].layers:
            freq[layer] += 1
    counts = pattern_counts("bottleneck", 12, [6, 9, 12])
    assert freq.sum() == trials * budget
    if budget == 1:
        expected = counts / counts.sum() * trials
        chi2 = float(((freq - expected) ** 2 / expected).sum())
        assert chi2 < 31.3  # 99.9% quantile of chi-square with 11 degrees of freedom
    for high in range(12):
        for low in range(12):
            if counts[high] > counts[low]:
                assert freq[high] > freq[low]


def test_random_is_uniform():
    allocator = make("random")
    rng = np.random.default_rng(5)
    freq = np.zeros(12)
    for _ in range(6000):
        for layer in allocator.allocate(1, {0: 3}, rng)[0].layers:
            freq[layer] += 1
    expected = 6000 * 3 / 12
    assert np.all(np.abs(freq - expected) < 0.1 * expected)


def test_levels_are_ordered_by_score():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = rng.exponential(size=int(rng.integers(3, 20)))
        probs, levels = level_probabilities(scores, 3)
        order = np.argsort(scores)
        assert np.all(np.diff(probs[order]) >= -1e-12), "a larger score got a smaller probability"
        assert np.all(np.diff(levels[order]) >= 0)
        assert probs.sum() == pytest.approx(1.0)


def test_levels_match_official_one_two_three_weights():
    scores = np.array([0.1, 0.11, 5.0, 5.1, 0.12, 2.0, 2.1, 5.2])
    probs, levels = level_probabilities(scores, 3)
    assert levels.tolist() == [0, 0, 2, 2, 0, 1, 1, 2]
    assert probs.tolist() == pytest.approx(np.array([1, 1, 3, 3, 1, 2, 2, 3]) / 16)


def test_kmeans_1d_finds_the_optimal_split():
    assert importance_levels(np.array([1.0, 2.0, 10.0, 11.0, 30.0]), 3).tolist() == [0, 0, 1, 1, 2]


def test_fim_schedule_and_hold():
    allocator = make("fim+gd", fim_warmup=4, fim_every=3)
    assert [r for r in range(1, 15) if allocator.wants_importance(r)] == [5, 8, 11, 14]
    rng = np.random.default_rng(0)
    # warm-up: RGD pattern
    assert not allocator.uses_importance(2)
    scores = np.arange(12, dtype=float)  # deeper = more important
    log = allocator.set_importance(5, scores)
    assert len(log["probabilities"]) == 12
    assert allocator.uses_importance(5) and allocator.uses_importance(6)  # held until the next refresh
    freq = np.zeros(12)
    for _ in range(3000):
        for layer in allocator.allocate(6, {0: 1}, rng)[0].layers:
            freq[layer] += 1
    assert freq[8:].sum() > freq[:4].sum() * 2  # level 3 vs level 1


def test_fim_official_mode_falls_back_between_refreshes():
    allocator = make("fim+gd", fim_warmup=4, fim_every=3, fim_hold=False, randomized=False, pattern="bottleneck")
    allocator.set_importance(5, np.arange(12, dtype=float))
    assert allocator.uses_importance(5)
    assert not allocator.uses_importance(6)
    plan = allocator.allocate(6, {0: 6}, np.random.default_rng(0))[0]
    assert plan.layers == (0, 1, 2, 9, 10, 11)  # the GD pattern again


def test_fim_state_round_trips():
    allocator = make("fim")
    allocator.set_importance(5, np.linspace(0, 1, 12))
    clone = make("fim")
    clone.load_state_dict(allocator.state_dict())
    assert np.allclose(clone.probabilities, allocator.probabilities)
    assert clone.refreshed_at == 5


def test_equal_scores_share_a_level():
    """An all-zero Fisher (e.g. an empty proxy set) must not rank layers by their index."""
    levels = importance_levels(np.zeros(6), 3)
    assert levels.tolist() == [0] * 6
    probs, _ = level_probabilities(np.zeros(6), 3)
    assert probs.tolist() == pytest.approx([1 / 6] * 6)
    assert importance_levels(np.array([1.0, 1.0, 5.0, 5.0, 5.0, 9.0]), 3).tolist() == [0, 0, 1, 1, 1, 2]
    rng = np.random.default_rng(1)
    for _ in range(200):
        scores = rng.integers(0, 4, size=int(rng.integers(2, 12))).astype(float)
        levels = importance_levels(scores, 3)
        for value in np.unique(scores):
            assert len(set(levels[scores == value])) == 1, (scores, levels)
        order = np.argsort(scores)
        assert np.all(np.diff(levels[order]) >= 0)
