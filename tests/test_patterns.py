import numpy as np
import pytest

from fedhello.patterns import pattern_counts, tier_layers


def test_bottleneck_paper_budgets_of_12():
    assert tier_layers("bottleneck", 12, 6) == (0, 1, 2, 9, 10, 11)
    assert tier_layers("bottleneck", 12, 9) == (0, 1, 2, 3, 4, 8, 9, 10, 11)
    assert tier_layers("bottleneck", 12, 12) == tuple(range(12))
    counts = pattern_counts("bottleneck", 12, [6, 9, 12])
    assert counts.tolist() == [3, 3, 3, 2, 2, 1, 1, 1, 2, 3, 3, 3]
    assert counts.sum() == 27


@pytest.mark.parametrize(
    ("pattern", "num_layers", "budget", "expected"),
    [
        ("bottleneck", 6, 3, (0, 1, 5)),
        ("bottleneck", 6, 4, (0, 1, 4, 5)),
        ("bottleneck", 5, 3, (0, 1, 4)),
        ("bottleneck", 5, 5, (0, 1, 2, 3, 4)),
        ("triangle", 6, 3, (0, 1, 2)),
        ("triangle", 12, 9, tuple(range(9))),
        ("inverted_triangle", 6, 3, (3, 4, 5)),
        ("inverted_triangle", 12, 9, tuple(range(3, 12))),
        ("uniform", 12, 6, (0, 2, 4, 6, 8, 10)),
        ("uniform", 12, 9, (0, 1, 2, 4, 5, 6, 8, 9, 10)),
        ("uniform", 6, 3, (0, 2, 4)),
        ("uniform", 6, 4, (0, 1, 3, 4)),
        ("uniform", 24, 1, (0,)),
    ],
)
def test_tier_layer_sets(pattern, num_layers, budget, expected):
    assert tier_layers(pattern, num_layers, budget) == expected


@pytest.mark.parametrize("pattern", ["bottleneck", "triangle", "inverted_triangle", "uniform"])
@pytest.mark.parametrize("num_layers", [1, 2, 5, 6, 12, 24, 32])
def test_every_budget_gives_exactly_k_distinct_layers(pattern, num_layers):
    for budget in range(1, num_layers + 1):
        layers = tier_layers(pattern, num_layers, budget)
        assert len(layers) == budget
        assert all(0 <= i < num_layers for i in layers)


def test_count_shapes():
    tri = pattern_counts("triangle", 12, [6, 9, 12])
    inv = pattern_counts("inverted_triangle", 12, [6, 9, 12])
    assert np.all(np.diff(tri) <= 0) and tri[0] > tri[-1]
    assert np.all(np.diff(inv) >= 0) and inv[-1] > inv[0]
    assert tri.tolist() == inv[::-1].tolist()


def test_budget_out_of_range():
    with pytest.raises(ValueError):
        tier_layers("bottleneck", 6, 7)
    with pytest.raises(ValueError):
        tier_layers("bottleneck", 6, 0)
