"""Statistics that separate methods from noise: mean ± sample std over seeds and the paired difference
to a reference method with its t-interval. Pure functions on numbers, no I/O.

Cells of one (partition, seed) share partitions, tier assignment and client sampling, so a method and the
reference are compared seed by seed: the per-seed differences remove the part of the noise both runs share,
and their t-interval says whether the grid can tell the two apart at all.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value). Empty input is an error."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std


@dataclass(frozen=True)
class PairedDifference:
    """method - reference, matched by seed."""

    seeds: list[int]  # the matched seeds, ascending
    differences: list[float]  # per matched seed
    mean: float
    std: float  # sample std of the differences (0 for one pair)
    interval: tuple[float, float] | None  # t-interval of the mean difference; None with fewer than 2 pairs
    confidence: float
    unmatched: int  # seeds present for only one of the two (left out)

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def undetermined(self) -> bool:
        """The mean or the interval is not a finite number (a NaN or infinite accuracy): nothing can be told."""
        values = [self.mean, *(self.interval or ())]
        return not all(math.isfinite(v) for v in values)

    @property
    def tie(self) -> bool:
        """The interval contains 0: the seeds cannot tell the method from the reference (always with n < 2,
        and when the difference is undetermined: a NaN comparison is False, which must not read as a win)."""
        if self.interval is None or self.undetermined:
            return True
        return self.interval[0] <= 0.0 <= self.interval[1]

    @property
    def half_width(self) -> float | None:
        """Half the interval's width (None without an interval)."""
        return None if self.interval is None else (self.interval[1] - self.interval[0]) / 2.0


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """mean ± t_{(1+c)/2, n-1} * sd / sqrt(n); None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean, sd = mean_std(values)
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def seeds_needed(sd: float, target: float, confidence: float = 0.95, limit: int = 10_000) -> int | None:
    """The fewest seeds n (at least 2) whose t-interval half-width t_{(1+c)/2, n-1} * sd / sqrt(n) is at most
    `target`, if the differences keep their sample std `sd` (t is taken at n - 1 degrees of freedom for each
    n tried, so this is the exact answer to ceil((t * sd / target)^2) solved with t following n). None when
    more than `limit` seeds would be needed or sd is not a finite number."""
    if target <= 0.0:
        raise ValueError(f"target must be positive, got {target}")
    if not math.isfinite(sd):
        return None
    quantile = (1.0 + confidence) / 2.0
    # start at the normal approximation's answer, a lower bound (t > z at every n), so few n are tried
    n = max(2, math.ceil((float(stats.norm.ppf(quantile)) * sd / target) ** 2))
    while n <= limit:
        if float(stats.t.ppf(quantile, n - 1)) * sd / math.sqrt(n) <= target:
            return n
        n += 1
    return None


def paired_difference(
    method_values: Mapping[int, float], reference_values: Mapping[int, float], confidence: float = 0.95
) -> PairedDifference | None:
    """Per-seed differences method - reference (seed -> value maps) and their t-interval. Seeds present in
    only one map are left out and counted in `unmatched`; None when no seed matches."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    seeds = sorted(set(method_values) & set(reference_values))
    unmatched = len(set(method_values) ^ set(reference_values))
    if not seeds:
        return None
    diffs = [float(method_values[s]) - float(reference_values[s]) for s in seeds]
    mean, std = mean_std(diffs)
    return PairedDifference(seeds, diffs, mean, std, t_interval(diffs, confidence), confidence, unmatched)
