"""Paired statistics of `fedhello compare` on hand-made numbers."""

import math

import pytest

from fedhello.compare.results import format_delta
from fedhello.compare.stats import mean_std, paired_difference, t_interval

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
