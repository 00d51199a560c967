"""FlexLoRA: SVD of the weighted sum of the clients' full products B_k A_k."""

import torch

from fedhello.methods.flexlora.aggregator import flexlora_aggregate, svd_factors
from fedhello.models.ranks import truncate
from fedhello.plan import ClientUpdate, Plan

A, B, HEAD = "m.layer.0.q.lora_A.default.weight", "m.layer.0.q.lora_B.default.weight", "m.classifier.weight"
R, IN, OUT = 6, 9, 7


def factors(rank, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rank, IN, generator=g, dtype=torch.float64), torch.randn(
        OUT, rank, generator=g, dtype=torch.float64
    )


def test_reproduces_the_exact_weighted_sum_of_products_when_ranks_allow():
    (a1, b1), (a2, b2) = factors(2, 1), factors(3, 2)  # total rank 5 <= r_max 6
    g = {
        A: torch.zeros(R, IN, dtype=torch.float64),
        B: torch.zeros(OUT, R, dtype=torch.float64),
        HEAD: torch.zeros(2, dtype=torch.float64),
    }
    ups = [
        ClientUpdate(1, Plan((0,), ranks={0: 2}), {A: a1, B: b1, HEAD: torch.ones(2, dtype=torch.float64)}, 10),
        ClientUpdate(2, Plan((0,), ranks={0: 3}), {A: a2, B: b2, HEAD: 4 * torch.ones(2, dtype=torch.float64)}, 30),
    ]
    out = flexlora_aggregate(g, ups, "samples")
    target = 0.25 * (b1 @ a1) + 0.75 * (b2 @ a2)
    assert torch.allclose(out[B] @ out[A], target, atol=1e-10)
    assert torch.allclose(out[HEAD], torch.full((2,), 3.25, dtype=torch.float64))
    assert out[A].shape == (R, IN) and out[B].shape == (OUT, R)
    uniform = flexlora_aggregate(g, ups, "uniform")
    assert torch.allclose(uniform[B] @ uniform[A], 0.5 * (b1 @ a1 + b2 @ a2), atol=1e-10)


def test_a_rank_r_client_gets_the_best_rank_r_approximation():
    a, b = factors(R, 3)
    product = b @ a
    full_b, full_a = svd_factors(product, R)
    s = torch.linalg.svdvals(product)
    for r in (1, 3, 5):
        approx = truncate(B, full_b, r) @ truncate(A, full_a, r)
        # Eckart-Young: the error of the best rank-r approximation is the norm of the tail singular values
        assert torch.isclose(torch.linalg.matrix_norm(product - approx), s[r:].norm(), atol=1e-9)


def test_untrained_pairs_stay_and_svd_factors_pad_when_rank_exceeds_the_matrix():
    g = {A: torch.ones(R, IN), B: torch.ones(OUT, R)}
    out = flexlora_aggregate(g, [ClientUpdate(1, Plan(()), {}, 5)])
    assert torch.equal(out[A], g[A]) and torch.equal(out[B], g[B])
    b, a = svd_factors(torch.ones(2, 3, dtype=torch.float64), 4)
    assert b.shape == (2, 4) and a.shape == (4, 3) and torch.allclose(b @ a, torch.ones(2, 3, dtype=torch.float64))
