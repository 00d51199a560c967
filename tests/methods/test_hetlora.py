"""Rank helpers, element-wise rank-masked FedAvg and HetLoRA's norm-weighted zero-padding aggregation."""

import torch

from fedhello.aggregation import AGGREGATORS, masked_fedavg
from fedhello.aggregation.rank_fedavg import rank_masked_fedavg
from fedhello.methods.hetlora.aggregator import hetlora_aggregate
from fedhello.methods.hetlora.client import self_prune
from fedhello.models.ranks import coverage, pad, truncate
from fedhello.plan import ClientUpdate, Plan

A, B, HEAD = "m.layer.0.q.lora_A.default.weight", "m.layer.0.q.lora_B.default.weight", "m.classifier.weight"
R, IN, OUT = 4, 5, 3


def state(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {A: torch.randn(R, IN, generator=g), B: torch.randn(OUT, R, generator=g), HEAD: torch.randn(2, 3)}


def update(cid, tensors, rank=None, samples=10):
    return ClientUpdate(cid, Plan((0,), ranks={0: rank} if rank else None), tensors, samples)


def test_truncate_then_pad_round_trips_the_kept_components():
    full = state()
    for name in (A, B):
        small = truncate(name, full[name], 2)
        assert small.shape == ((2, IN) if name == A else (OUT, 2))
        padded = pad(name, small, full[name].shape)
        mask = coverage(name, small, full[name].shape)
        assert torch.equal(padded[mask], full[name][mask]) and torch.all(padded[~mask] == 0)
        assert torch.equal(truncate(name, padded, 2), small)
    assert torch.equal(truncate(HEAD, full[HEAD], 2), full[HEAD])


def test_rank_masked_fedavg_equals_masked_fedavg_at_full_rank():
    g = state(0)
    ups = [update(1, state(1)), update(2, state(2), samples=30)]
    for weighting in ("uniform", "samples"):
        ours, ref = rank_masked_fedavg(g, ups, weighting), masked_fedavg(g, ups, weighting)
        assert all(torch.allclose(ours[k], ref[k]) for k in g)


def test_rank_masked_fedavg_averages_each_component_over_the_clients_that_hold_it():
    g, full, low = state(0), state(1), state(2)
    low_up = {A: truncate(A, low[A], 2), B: truncate(B, low[B], 2), HEAD: low[HEAD]}
    out = rank_masked_fedavg(g, [update(1, full), update(2, low_up, rank=2)])
    assert torch.allclose(out[A][:2], (full[A][:2] + low[A][:2]) / 2)
    assert torch.allclose(out[A][2:], full[A][2:])  # only the rank-4 client trained rows 2-3
    assert torch.allclose(out[B][:, 2:], full[B][:, 2:])
    untouched = rank_masked_fedavg(g, [update(2, low_up, rank=2)])
    assert torch.equal(untouched[A][2:], g[A][2:])  # nobody covered them: global kept


def test_hetlora_weights_clients_by_the_frobenius_norm_of_their_update():
    g = state(0)
    one = state(1)
    three = {A: one[A], B: 3 * one[B], HEAD: one[HEAD] + 1}  # same direction, 3x the norm of B A
    out = hetlora_aggregate(g, [update(1, one), update(2, three)])
    assert torch.allclose(out[A], one[A])  # identical A
    assert torch.allclose(out[B], (1 * one[B] + 3 * three[B]) / 4)
    assert torch.allclose(out[HEAD], one[HEAD] + 0.5)  # the head: plain mean


def test_hetlora_zero_pads_low_rank_clients_and_keeps_untrained_tensors():
    g, full, low = state(0), state(1), state(2)
    low_up = {A: truncate(A, low[A], 2), B: truncate(B, low[B], 2)}
    w_full = torch.linalg.matrix_norm(full[B] @ full[A])
    w_low = torch.linalg.matrix_norm(low_up[B] @ low_up[A])
    out = hetlora_aggregate(g, [update(1, full), update(2, low_up, rank=2)])
    expected = (w_full * full[A] + w_low * pad(A, low_up[A], g[A].shape)) / (w_full + w_low)
    assert torch.allclose(out[A], expected, atol=1e-6)
    assert torch.allclose(out[A][2:], full[A][2:] * w_full / (w_full + w_low), atol=1e-6)  # padded zeros count
    assert torch.allclose(out[HEAD], full[HEAD])  # only client 1 sent the head
    assert torch.equal(hetlora_aggregate(g, [])[A], g[A])


def test_aggregators_are_registered_and_pure():
    g = state(0)
    ups = [update(1, state(1))]
    before = {k: v.clone() for k, v in g.items()}
    for name in ("hetlora", "rank_fedavg", "flexlora"):
        AGGREGATORS.get(name)().aggregate(g, ups)
        assert all(torch.equal(g[k], before[k]) for k in g)


def test_a_self_pruned_client_is_a_rank_k_upload_to_every_rank_aware_aggregator():
    """docs/compare.md: a client that prunes rank 4 to 3 sends a rank-3 adapter. `rank_fedavg` then averages
    component 3 over the clients that sent it (the other client's 5.0), not with the pruned client's zeros
    (2.5); `hetlora` zero-pads, so there the two are the same."""
    g = {A: torch.zeros(R, IN), B: torch.zeros(OUT, R)}
    strong = {A: torch.full((R, IN), 5.0), B: torch.full((OUT, R), 5.0)}
    weak = {A: torch.eye(R, IN), B: torch.eye(OUT, R)}
    weak[A][3] *= 0.001  # its top component carries almost nothing: pruned
    assert self_prune(weak, {A: R}, threshold=0.1, keep_ratio=0.75) == {A: 3}
    real = {A: torch.eye(R, IN)[:3], B: torch.eye(OUT, R)[:, :3]}  # what a rank-3 client sends
    pruned_round = [update(1, strong), update(2, weak)]
    out = rank_masked_fedavg(g, pruned_round)
    assert out[A][3].tolist() == [5.0] * IN and out[B][:, 3].tolist() == [5.0] * OUT
    for aggregate in (rank_masked_fedavg, hetlora_aggregate):
        same = aggregate(g, [update(1, strong), update(2, real, rank=3)])
        assert all(torch.equal(aggregate(g, pruned_round)[k], same[k]) for k in g), aggregate.__name__
