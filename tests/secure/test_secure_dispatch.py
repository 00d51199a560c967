"""The local engine's secure dispatch (`server.secure.InProcessSecureDispatch`) on hand-made plans: sums as
`LayerSums`, updates without tensors, and a round the protocol cannot finish."""

from __future__ import annotations

import pytest
import torch

from fedhello.aggregation.base import apply_mean
from fedhello.aggregation.fedavg import masked_fedavg
from fedhello.plan import ClientUpdate, Plan
from fedhello.secure import SecureSettings
from fedhello.server.secure import BYTES_UP, InProcessSecureDispatch

STATE = {f"l{i}": torch.zeros(4, 3) for i in range(3)}
PLANS = {0: Plan((0, 1)), 1: Plan((0, 1, 2)), 2: Plan((1, 2))}


def uploads(plan: Plan) -> dict[str, tuple[int, ...]]:
    return {f"l{i}": (4, 3) for i in plan.layers}


def train(round_num, plans, state, skip=None):
    gen = torch.Generator().manual_seed(round_num)
    return [
        ClientUpdate(c, p, {n: state[n] + 0.01 * torch.randn(4, 3, generator=gen) for n in uploads(p) if n != skip}, 10)
        for c, p in sorted(plans.items())
    ]


def test_sums_and_bare_updates():
    dispatch = InProcessSecureDispatch(train, uploads, SecureSettings(), seed=1)
    updates, sums = dispatch.secure_round(1, PLANS, STATE)
    assert [u.client_id for u in updates] == [0, 1, 2] and all(u.tensors == {} for u in updates)
    assert all(u.num_samples == 10 and u.metrics[BYTES_UP] > 0 for u in updates)
    assert {n: c.unique().tolist() for n, c in sums.counts.items()} == {"l0": [2.0], "l1": [3.0], "l2": [2.0]}
    plain = masked_fedavg(STATE, train(1, PLANS, STATE))
    secure = apply_mean(STATE, sums)
    assert all(torch.allclose(plain[n], secure[n], atol=1e-8) for n in STATE)
    assert dispatch.lost_reasons() == {}


def test_a_round_below_threshold_releases_nothing():
    def broken(round_num, plans, state):  # client updates miss "l0": clients 0 and 1 refuse to mask
        return train(round_num, plans, state, skip="l0")

    dispatch = InProcessSecureDispatch(broken, uploads, SecureSettings(threshold=1.0), seed=1)
    with pytest.warns(UserWarning, match="fewer than the threshold 3"):
        updates, sums = dispatch.secure_round(1, PLANS, STATE)
    assert updates == [] and sums.sums == {}
    assert set(dispatch.lost_reasons()) == {0, 1, 2}
    assert "secure aggregation failed" in dispatch.lost_reasons()[2]
