"""GD-HLA geometric patterns: which transformer layers a tier with a budget of k of L layers trains.

Layer 0 is the block nearest the input, L-1 the one nearest the output. For L=12 and budgets 6/9/12:

| pattern            | rule                                    | budget 6 of 12      | per-layer counts (6/9/12)   |
|--------------------|-----------------------------------------|---------------------|-----------------------------|
| bottleneck         | alternate ends inward: 0, L-1, 1, L-2.. | 0 1 2 9 10 11       | 3 3 3 2 2 1 1 1 2 3 3 3     |
| triangle           | shallow first: 0, 1, 2, ...             | 0 1 2 3 4 5         | 3 3 3 3 3 3 2 2 2 1 1 1     |
| inverted_triangle  | deep first: L-1, L-2, ...               | 6 7 8 9 10 11       | 1 1 1 2 2 2 3 3 3 3 3 3     |
| uniform            | k layers spread evenly: floor(i*L/k)    | 0 2 4 6 8 10        | 3 2 3 1 3 2 3 1 3 2 3 1 (*) |

(*) uniform spreads each budget evenly; counts for 9 of 12 are floor(i*12/9) = 0 1 2 4 5 6 8 9 10.
Counts are summed over tiers, one per tier (as the official code). Convention: "triangle" means the counts
fall with depth (shallow layers are trained by most clients), "inverted_triangle" that they rise with depth.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

PatternFn = Callable[[int, int], tuple[int, ...]]


def _bottleneck(num_layers: int, budget: int) -> tuple[int, ...]:
    order: list[int] = []
    low, high = 0, num_layers - 1
    while low <= high:
        order.append(low)
        if high != low:
            order.append(high)
        low, high = low + 1, high - 1
    return tuple(sorted(order[:budget]))


def _triangle(num_layers: int, budget: int) -> tuple[int, ...]:
    return tuple(range(budget))


def _inverted_triangle(num_layers: int, budget: int) -> tuple[int, ...]:
    return tuple(range(num_layers - budget, num_layers))


def _uniform(num_layers: int, budget: int) -> tuple[int, ...]:
    return tuple(sorted({(i * num_layers) // budget for i in range(budget)}))


PATTERNS: dict[str, PatternFn] = {
    "bottleneck": _bottleneck,
    "triangle": _triangle,
    "inverted_triangle": _inverted_triangle,
    "uniform": _uniform,
}


def tier_layers(pattern: str, num_layers: int, budget: int) -> tuple[int, ...]:
    """The layers a tier with `budget` layers trains under a GD pattern."""
    if not 0 < budget <= num_layers:
        raise ValueError(f"budget {budget} must be in 1..{num_layers}")
    return PATTERNS[pattern](num_layers, budget)


def pattern_counts(pattern: str, num_layers: int, budgets: Sequence[int]) -> np.ndarray:
    """How many tiers train each layer (one vote per tier)."""
    counts = np.zeros(num_layers, dtype=np.int64)
    for budget in budgets:
        counts[list(tier_layers(pattern, num_layers, budget))] += 1
    return counts
