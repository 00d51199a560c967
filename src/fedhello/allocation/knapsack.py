"""Exact layer knapsack for budgets whose cost depends on how many layers are trained and how deep.

With real freezing a layer set's cost is monotone in its size and in its depth (the lowest trained layer,
see `fedhello.resources.cost`), not a sum of per-layer weights. The best set under a budget is then found
exactly by trying every lowest layer f: among the layers at or above f, take the n most valuable, with n the
largest count that still fits at f. Any set of n layers at or above f costs at most what n layers reaching
f cost, so every candidate fits, and the optimum is among the candidates. O(L^2 log L) per client.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Fits = Callable[[int, int], bool]  # (count, lowest layer) -> within the budget


def best_layer_set(values: Sequence[float], fits: Fits) -> tuple[int, ...]:
    """The layer set of largest total value that `fits`; among equal values, the shallower-cost one (the
    highest lowest layer, then the fewest layers), so a layer of value 0 or less is never added. Empty when not
    even one layer fits."""
    num_layers = len(values)
    best: tuple[int, ...] = ()
    best_key: tuple[float, int, int] | None = None
    for lowest in range(num_layers):
        above = sorted(range(lowest, num_layers), key=lambda i: (-values[i], -i))
        count = next((n for n in range(len(above), 0, -1) if fits(n, lowest)), 0)
        count = min(count, sum(values[i] > 0 for i in above))  # worthless layers add cost, not value
        if count == 0:
            continue
        chosen = tuple(sorted(above[:count]))
        key = (round(sum(values[i] for i in chosen), 9), min(chosen), -count)
        if best_key is None or key > best_key:
            best, best_key = chosen, key
    return best


def count_fits(budget: int) -> Fits:
    """A layer-count budget (no depth limit): at most `budget` layers, anywhere."""
    return lambda count, lowest: count <= budget
