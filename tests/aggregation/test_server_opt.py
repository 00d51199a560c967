"""Server optimizers on per-layer pseudo-gradients: Flower's update rules entry by entry, a layer nobody trained
keeps its value and its moments, the moments survive a checkpoint, and any aggregator can be wrapped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedhello.aggregation import AGGREGATORS
from fedhello.aggregation.base import layer_sums
from fedhello.aggregation.server_opt import ServerOptimizer, with_server_optimizer
from fedhello.config import AggregationConfig, load_config
from fedhello.errors import ConfigError
from fedhello.plan import ClientUpdate, Plan

A, B = "m.encoder.layer.0.q.lora_A.default.weight", "m.encoder.layer.1.q.lora_A.default.weight"
DELTAS = [np.array([0.5, -0.2, 0.0]), np.array([0.1, 0.3, -0.4]), np.array([-0.3, 0.05, 0.2])]


def flower(kind: str, w: np.ndarray, deltas: list[np.ndarray], s: AggregationConfig, lr: float) -> np.ndarray:
    """The weights after Flower's strategy `kind` (flwr.serverapp.strategy, its lines), every round aggregating to
    w + delta: FedOpt's `_compute_deltat_and_mt`, then FedAdam / FedYogi / FedAdagrad's `aggregate_train`, or
    FedAvgM's."""
    m = v = momentum = None
    for server_round, step in enumerate(deltas, start=1):
        aggregated = w + step
        if kind == "fedavgm":
            pseudo_gradient = w - aggregated
            momentum = pseudo_gradient if momentum is None else s.server_momentum * momentum + pseudo_gradient
            w = w - lr * momentum
            continue
        beta_1 = 0.0 if kind == "fedadagrad" else s.beta1
        delta_t = aggregated - w
        m = np.zeros_like(w) if m is None else m
        m = beta_1 * m + (1 - beta_1) * delta_t
        v = np.zeros_like(w) if v is None else v
        if kind == "fedadam":
            v = s.beta2 * v + (1 - s.beta2) * (delta_t**2)
            eta_norm = (
                lr * np.sqrt(1 - np.power(s.beta2, server_round + 1.0)) / (1 - np.power(s.beta1, server_round + 1.0))
            )
            w = w + eta_norm * m / (np.sqrt(v) + s.tau)
        elif kind == "fedyogi":
            v = v - (1.0 - s.beta2) * (delta_t**2) * np.sign(v - delta_t**2)
            w = w + lr * m / (np.sqrt(v) + s.tau)
        else:
            v = v + (delta_t**2)
            w = w + lr * m / (np.sqrt(v) + s.tau)
    return w


def moved(cid: int, state: dict[str, torch.Tensor], deltas: dict[str, np.ndarray]) -> ClientUpdate:
    tensors = {n: state[n] + torch.from_numpy(d) for n, d in deltas.items()}
    return ClientUpdate(cid, Plan((0,)), tensors, 10)


def optimizer(kind: str, inner: str = "fedavg", **options) -> ServerOptimizer:  # noqa: ANN003
    settings = AggregationConfig(name=inner, server_optimizer=kind, **options)
    wrapped = with_server_optimizer(AGGREGATORS.get(inner).from_config(settings), settings)
    assert isinstance(wrapped, ServerOptimizer)
    return wrapped


@pytest.mark.parametrize(("kind", "lr"), [("fedavgm", 1.0), ("fedadam", 0.1), ("fedyogi", 0.01), ("fedadagrad", 0.1)])
def test_each_rule_is_flowers_when_every_entry_is_trained(kind, lr):
    opt = optimizer(kind, server_momentum=0.5)
    state = {A: torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)}
    for step in DELTAS:
        state = opt.aggregate(state, [moved(0, state, {A: step})])
    expected = flower(kind, np.array([1.0, 2.0, 3.0]), DELTAS, opt.rule.settings, lr)  # lr: Flower's default
    np.testing.assert_allclose(state[A].numpy(), expected, rtol=1e-12, atol=1e-15)
    assert not np.allclose(expected, np.array([1.0, 2.0, 3.0]) + sum(DELTAS)), "not plain FedAvg"


@pytest.mark.parametrize("kind", ["fedavgm", "fedadam", "fedyogi", "fedadagrad"])
def test_a_layer_nobody_trained_keeps_its_value_and_its_moments(kind):
    """Layer 1 (B) is trained in rounds 1 and 3 only: its value stands still in round 2, and round 3 steps it as
    Flower would have stepped it in its second round (FedAdam: bias correction of its own step count)."""
    opt = optimizer(kind, server_lr=0.3)
    start = {A: torch.zeros(3, dtype=torch.float64), B: torch.ones(3, dtype=torch.float64)}
    state, saved = dict(start), {}
    for rnd, step in enumerate(DELTAS):
        deltas = {A: step, B: step * 2} if rnd != 1 else {A: step}
        before_b = state[B].clone()
        state = opt.aggregate(state, [moved(0, state, deltas)])
        if rnd == 1:
            assert torch.equal(state[B], before_b)
            assert all(torch.equal(opt.moments[B][k], saved[k]) for k in saved), "its moments untouched"
        saved = {k: v.clone() for k, v in opt.moments[B].items()}
    settings = opt.rule.settings
    np.testing.assert_allclose(state[A].numpy(), flower(kind, np.zeros(3), DELTAS, settings, 0.3), rtol=1e-12)
    expected_b = flower(kind, np.ones(3), [DELTAS[0] * 2, DELTAS[2] * 2], settings, 0.3)
    np.testing.assert_allclose(state[B].numpy(), expected_b, rtol=1e-12)


def test_only_the_entries_an_upload_covers_are_stepped():
    """A rank-truncated factor (rank_fedavg) covers its first rows: the others keep their value and zero moments."""
    opt = optimizer("fedadam", inner="rank_fedavg")
    state = {"m.encoder.layer.0.q.lora_A.default.weight": torch.zeros(3, 2)}
    name = next(iter(state))
    upload = ClientUpdate(0, Plan((0,), ranks={0: 1}), {name: torch.ones(1, 2)}, 10)
    new = opt.aggregate(state, [upload])
    assert bool((new[name][0] > 0).all()) and torch.equal(new[name][1:], torch.zeros(2, 2))
    assert torch.equal(opt.moments[name]["t"], torch.tensor([[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64))


def test_the_secure_path_steps_along_the_mean_of_the_sums():
    """Secure aggregation hands the wrapper `LayerSums`: it steps the entries their counts cover, like `aggregate`."""
    state = {A: torch.zeros(3, dtype=torch.float64), B: torch.ones(3, dtype=torch.float64)}
    updates = [moved(0, state, {A: DELTAS[0]}), moved(1, state, {A: DELTAS[1]})]
    by_updates = optimizer("fedyogi").aggregate(state, updates)
    by_sums = optimizer("fedyogi").apply_sums(state, layer_sums(state, updates))
    assert all(torch.allclose(by_updates[n], by_sums[n], rtol=0, atol=1e-15) for n in state)
    assert torch.equal(by_sums[B], state[B])


def test_it_wraps_a_robust_rule_and_forwards_its_notes():
    opt = optimizer("fedavgm", inner="median")
    state = {A: torch.zeros(3, dtype=torch.float64)}
    new = opt.aggregate(state, [moved(0, state, {A: DELTAS[0]}), moved(1, state, {A: DELTAS[1]})])
    torch.testing.assert_close(new[A], torch.from_numpy((DELTAS[0] + DELTAS[1]) / 2))  # first step: lr 1, m = Delta
    assert opt.notes() and opt.notes()[0].startswith("median:")
    assert opt.accepts == AGGREGATORS.get("median").accepts


def test_the_moments_survive_a_checkpoint(tmp_path):
    from fedhello.server.checkpoint import load_checkpoint, save_checkpoint

    opt = optimizer("fedadam", inner="fedpilot")  # the inner rule's own state travels too
    state = {A: torch.zeros(3, dtype=torch.float32), B: torch.ones(3, dtype=torch.float32)}
    state = opt.aggregate(state, [moved(0, state, {A: DELTAS[0].astype(np.float32)})])
    save_checkpoint(tmp_path, 1, load_config(None), state, {}, [0], opt.state_dict())
    restored = optimizer("fedadam", inner="fedpilot")
    restored.load_state_dict(load_checkpoint(tmp_path).aggregator_state)
    assert restored.inner.counts == opt.inner.counts and restored.moments.keys() == opt.moments.keys() == {A}
    assert all(torch.equal(restored.moments[A][k], v) and v.dtype == torch.float64 for k, v in opt.moments[A].items())
    step = [moved(0, state, {A: DELTAS[1].astype(np.float32), B: DELTAS[2].astype(np.float32)})]
    assert all(torch.equal(opt.aggregate(state, step)[n], restored.aggregate(state, step)[n]) for n in state)


def test_server_optimizer_options_are_checked_and_none_wraps_nothing():
    plain = AGGREGATORS.get("fedavg")()
    assert with_server_optimizer(plain, AggregationConfig()) is plain
    for bad, field in (("aggregation.beta1=1.0", "beta1"), ("aggregation.server_optimizer=sgd", "server_optimizer")):
        with pytest.raises(ConfigError, match=f"'aggregation.{field}'"):
            load_config(None, [bad])
