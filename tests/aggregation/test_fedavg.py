import pytest
import torch

from fedhello.aggregation import AGGREGATORS, masked_fedavg
from fedhello.plan import ClientUpdate, Plan


def update(cid, tensors, n=1, layers=(0,)):
    return ClientUpdate(client_id=cid, plan=Plan(layers), tensors=tensors, num_samples=n)


@pytest.fixture
def global_state():
    return {"l0.A": torch.zeros(2, 2), "l1.A": torch.ones(2, 2), "head": torch.full((3,), 5.0)}


def test_each_tensor_averaged_over_its_trainers_only(global_state):
    updates = [
        update(0, {"l0.A": torch.full((2, 2), 2.0), "head": torch.zeros(3)}),
        update(1, {"l0.A": torch.full((2, 2), 4.0), "head": torch.full((3,), 3.0)}),
        update(2, {"head": torch.full((3,), 6.0)}),
    ]
    new = masked_fedavg(global_state, updates)
    assert torch.equal(new["l0.A"], torch.full((2, 2), 3.0))  # clients 0 and 1 only, not diluted by 2
    assert torch.equal(new["l1.A"], torch.ones(2, 2))  # nobody trained it: unchanged
    assert torch.allclose(new["head"], torch.full((3,), 3.0))


def test_equals_w_plus_mean_delta(global_state):
    # seeded: with unseeded draws an entry of (a + b) / 2 near 0 sometimes differed from the float32 rewrite
    # w + ((a - w) + (b - w)) / 2 by more than allclose's relative tolerance (a clean-clone run failed once)
    torch.manual_seed(0)
    a, b = torch.randn(2, 2), torch.randn(2, 2)
    new = masked_fedavg(global_state, [update(0, {"l1.A": a}), update(1, {"l1.A": b})])
    w = global_state["l1.A"]
    assert torch.allclose(new["l1.A"], w + ((a - w) + (b - w)) / 2)


def test_sample_weighting(global_state):
    updates = [update(0, {"l0.A": torch.full((2, 2), 1.0)}, n=1), update(1, {"l0.A": torch.full((2, 2), 4.0)}, n=3)]
    assert torch.allclose(masked_fedavg(global_state, updates, "samples")["l0.A"], torch.full((2, 2), 3.25))
    assert torch.allclose(masked_fedavg(global_state, updates, "uniform")["l0.A"], torch.full((2, 2), 2.5))


def test_pure_and_dtype_preserving(global_state):
    before = {k: v.clone() for k, v in global_state.items()}
    half = {k: v.half() for k, v in global_state.items()}
    upd = update(0, {"l0.A": torch.full((2, 2), 7.0)})
    new = masked_fedavg(global_state, [upd])
    assert all(torch.equal(global_state[k], before[k]) for k in before)
    assert new["l1.A"] is not global_state["l1.A"]
    assert masked_fedavg(half, [update(0, {"l0.A": torch.ones(2, 2).half()})])["l0.A"].dtype == torch.float16


def test_no_updates_keeps_everything(global_state):
    new = masked_fedavg(global_state, [])
    assert all(torch.equal(new[k], global_state[k]) for k in global_state)


def test_registered():
    agg = AGGREGATORS.get("fedavg")("uniform")
    assert callable(agg.aggregate)
