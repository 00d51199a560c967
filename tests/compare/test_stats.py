"""Paired statistics of `fedhello compare` on hand-made numbers. Most use a reference constant over seeds (the
interval is then the method's own); one has a reference that varies by seed, where only pairing resolves."""

import math

import pytest
from scipy import stats

from fedhello.compare.results import format_delta
from fedhello.compare.stats import mean_std, paired_difference, seeds_needed, t_interval

T_975_DF2 = 4.302652729749464  # Student t quantile, 97.5 %, 2 degrees of freedom (tables)


def test_mean_std_is_sample_std_and_zero_for_one_value():
    assert mean_std([1.0, 2.0, 3.0]) == pytest.approx((2.0, 1.0))  # sum of squares 2 / (n - 1) = 1
    assert mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError):
        mean_std([])


def test_paired_interval_computed_by_hand_contains_zero_is_a_tie():
    # differences 1, 2, 3: mean 2, sample sd 1, half width t * 1 / sqrt(3)
    diff = paired_difference({1: 11.0, 2: 12.0, 3: 13.0}, {1: 10.0, 2: 10.0, 3: 10.0})
    half = T_975_DF2 / math.sqrt(3)
    assert diff.seeds == [1, 2, 3] and diff.differences == [1.0, 2.0, 3.0]
    assert diff.mean == pytest.approx(2.0) and diff.std == pytest.approx(1.0)
    assert diff.interval == pytest.approx((2.0 - half, 2.0 + half))  # (-0.484, 4.484)
    assert diff.tie and diff.unmatched == 0 and diff.n == 3
    assert t_interval([1.0, 2.0, 3.0]) == pytest.approx(diff.interval)


def test_paired_interval_above_zero_is_a_clear_win():
    # differences 2, 3, 4 (as fractions 0.02 ...): interval (0.516, 5.484) points, zero excluded
    diff = paired_difference({1: 0.82, 2: 0.83, 3: 0.84}, {1: 0.80, 2: 0.80, 3: 0.80})
    half = T_975_DF2 / math.sqrt(3) / 100
    assert diff.interval == pytest.approx((0.03 - half, 0.03 + half))
    assert not diff.tie
    assert format_delta(diff) == "+3.0 [+0.5, +5.5]"
    loss = paired_difference({1: 0.78, 2: 0.77, 3: 0.76}, {1: 0.80, 2: 0.80, 3: 0.80})
    assert not loss.tie and loss.interval[1] < 0 and format_delta(loss).startswith("-3.0 [")


def test_pairs_match_by_seed_and_unmatched_seeds_are_counted():
    # seed 1 has no reference, seed 5 has no method cell: both left out, not shifted onto other seeds
    diff = paired_difference({1: 5.0, 2: 3.0, 3: 4.0, 4: 5.0}, {2: 1.0, 3: 1.0, 4: 1.0, 5: 9.0})
    assert diff.seeds == [2, 3, 4] and diff.differences == [2.0, 3.0, 4.0] and diff.unmatched == 2
    assert paired_difference({1: 1.0}, {2: 1.0}) is None


def test_one_pair_has_no_interval():
    diff = paired_difference({7: 0.9}, {7: 0.85})
    assert diff.interval is None and diff.tie and diff.std == 0.0
    assert format_delta(diff) == "+5.0 [n/a]"
    tie = paired_difference({1: 11.0, 2: 12.0, 3: 13.0}, {1: 10.0, 2: 10.0, 3: 10.0})
    assert format_delta(tie).startswith("**tie** +200.0 [")  # values are fractions; shown in points
    assert format_delta(None) == "–" and format_delta(None, is_reference=True) == "reference"


def test_a_nan_difference_is_undetermined_never_a_win():
    # NaN compares False with everything: an interval check alone would read (nan, nan) as "excludes 0"
    diff = paired_difference({1: float("nan"), 2: 0.83, 3: 0.84}, {1: 0.80, 2: 0.80, 3: 0.80})
    assert diff.undetermined and diff.tie
    assert format_delta(diff).startswith("**undetermined**")
    one = paired_difference({1: float("nan")}, {1: 0.8})
    assert one.undetermined and one.tie
    assert not paired_difference({1: 0.82, 2: 0.83, 3: 0.84}, {1: 0.80, 2: 0.80, 3: 0.80}).undetermined


def test_pairing_by_seed_resolves_what_an_unpaired_interval_cannot():
    # The reference moves 10 points from seed to seed (seeds change the partitions and the sampled clients);
    # the method is 2-3 points better on every seed. Paired, the seed effect cancels: differences 2.0, 2.5,
    # 3.0, sd 0.5, interval 2.5 ± 4.303 * 0.5 / sqrt(3) = (1.26, 3.74) points: not a tie. Unpaired (Welch),
    # the seed-to-seed spread of 10 points swamps it and the interval contains 0. This test fails if
    # `paired_difference` is replaced by an unpaired (Welch or pooled independent-samples) interval.
    reference = {1: 0.70, 2: 0.80, 3: 0.90}
    method = {1: 0.720, 2: 0.825, 3: 0.930}
    diff = paired_difference(method, reference)
    half = T_975_DF2 * 0.005 / math.sqrt(3)
    assert diff.differences == pytest.approx([0.02, 0.025, 0.03])
    assert diff.interval == pytest.approx((0.025 - half, 0.025 + half))
    assert not diff.tie and format_delta(diff) == "+2.5 [+1.3, +3.7]"
    welch = stats.ttest_ind(list(method.values()), list(reference.values()), equal_var=False)
    low, high = welch.confidence_interval(0.95)
    assert low < 0.0 < high  # what an unpaired interval would report: a tie


def test_seeds_needed_for_a_target_half_width():
    # sd 0.01, target ±0.015: n = 4 gives t(3) * 0.01 / 2 = 0.0159 (too wide), n = 5 gives 0.0124
    assert seeds_needed(0.01, 0.015) == 5
    assert 3.182446305284263 * 0.01 / 2 > 0.015 > 2.7764451051977987 * 0.01 / math.sqrt(5)
    assert seeds_needed(0.0, 0.015) == 2 and seeds_needed(float("nan"), 0.015) is None
    assert seeds_needed(1.0, 0.001, limit=100) is None
    # the table: a paired interval wider than the target says so and how many seeds would narrow it
    diff = paired_difference({1: 0.83, 2: 0.81, 3: 0.82}, {1: 0.80, 2: 0.80, 3: 0.80})  # sd 0.01, ±2.5 points
    assert diff.half_width == pytest.approx(T_975_DF2 * 0.01 / math.sqrt(3))
    assert format_delta(diff, target_half_width=0.015) == "**tie** +2.0 [-0.5, +4.5] (±2.5: needs ~5 seeds)"
    assert format_delta(diff, target_half_width=0.03) == format_delta(diff)  # narrow enough: nothing added
