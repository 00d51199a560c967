"""Differential privacy's server side on hand-made rounds: the noise of every tensor entry is calibrated to how many
clients trained it, clipping bounds each client's whole change, and local mode noises each upload."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from fedhello.aggregation.fedavg import MaskedFedAvg
from fedhello.config import PrivacyConfig
from fedhello.plan import ClientUpdate, Plan
from fedhello.privacy.mechanism import UNCLIPPED, PrivateAggregator, privatize_upload

FALSE_FAILURE = 1e-6  # per variance check: a correct mechanism fails a check this rarely
ENTRIES = 20_000  # draws per tensor


def variance_interval(sigma: float, n: int) -> tuple[float, float]:
    """Where the sample variance of n N(0, sigma^2) draws lies with probability 1 - FALSE_FAILURE
    ((n - 1) s^2 / sigma^2 is chi-square with n - 1 degrees of freedom)."""
    low, high = stats.chi2.ppf([FALSE_FAILURE / 2, 1 - FALSE_FAILURE / 2], n - 1)
    return sigma**2 * low / (n - 1), sigma**2 * high / (n - 1)


def round_of(global_state, uploads):  # noqa: ANN001, ANN201
    """Updates that send the global values back (no change) for the tensors each client lists."""
    return [
        ClientUpdate(cid, Plan((0,)), {name: global_state[name].clone() for name in names}, 10)
        for cid, names in enumerate(uploads)
    ]


def test_each_entry_gets_noise_of_z_c_over_its_contributor_count():
    """Tensor `a` is trained by 2 of 4 clients, `b` by all 4: the noise on their means is zC/2 and zC/4 -- not the
    zC/4 that calibrating on the round's 4 sampled clients would give `a`."""
    z, c = 1.3, 0.7
    global_state = {"a": torch.zeros(ENTRIES, dtype=torch.float64), "b": torch.zeros(ENTRIES, dtype=torch.float64)}
    updates = round_of(global_state, [["a", "b"], ["a", "b"], ["b"], ["b"]])
    settings = PrivacyConfig(mode="server", noise_multiplier=z, clip_norm=c)
    new = PrivateAggregator(MaskedFedAvg("uniform"), settings, seed=5, num_clients=4, per_round=4).aggregate(
        global_state, updates
    )
    for name, contributors in (("a", 2), ("b", 4)):
        variance = float(new[name].var())
        low, high = variance_interval(z * c / contributors, ENTRIES)
        assert low <= variance <= high, (name, variance, (low, high))
    low, high = variance_interval(z * c / 4, ENTRIES)  # the whole-round calibration is rejected for `a`
    assert not low <= float(new["a"].var()) <= high


def test_server_mode_clips_every_clients_whole_change():
    global_state = {"a": torch.zeros(3, dtype=torch.float64), "b": torch.zeros(4, dtype=torch.float64)}
    big = ClientUpdate(0, Plan((0,)), {"a": torch.full((3,), 10.0, dtype=torch.float64), "b": torch.ones(4)}, 5)
    small = ClientUpdate(1, Plan((0,)), {"a": torch.full((3,), 0.01, dtype=torch.float64)}, 5)
    settings = PrivacyConfig(mode="server", noise_multiplier=0.0, clip_norm=2.0)
    aggregator = PrivateAggregator(MaskedFedAvg("uniform"), settings, seed=1, num_clients=2, per_round=2)
    new = aggregator.aggregate(global_state, [big, small])
    norm = (300 + 4) ** 0.5  # client 0's change over both tensors together
    expected_a = (10.0 * 2.0 / norm + 0.01) / 2
    assert torch.allclose(new["a"], torch.full((3,), expected_a, dtype=torch.float64))
    assert torch.allclose(new["b"], torch.full((4,), 2.0 / norm, dtype=torch.float64))
    assert aggregator.record()["privacy"]["unclipped"] == 0.5


def test_noise_is_seeded_by_the_released_round_and_survives_a_checkpoint():
    global_state = {"a": torch.zeros(50, dtype=torch.float64)}
    settings = PrivacyConfig(mode="server", noise_multiplier=1.0, clip_norm=1.0, adaptive_clip=True)
    first = PrivateAggregator(MaskedFedAvg("uniform"), settings, seed=2, num_clients=40, per_round=40)
    first.aggregate(global_state, round_of(global_state, [["a"]] * 40))
    restored = PrivateAggregator(MaskedFedAvg("uniform"), settings, seed=2, num_clients=40, per_round=40)
    restored.load_state_dict(first.state_dict())
    assert restored.clip_norm == first.clip_norm != settings.clip_norm  # adaptive: all fitted, the norm shrank
    updates = round_of(global_state, [["a"]] * 40)
    a, b = first.aggregate(global_state, updates)["a"], restored.aggregate(global_state, updates)["a"]
    assert torch.equal(a, b)


def test_adaptive_clipping_moves_the_norm_toward_the_target_quantile():
    """Every change fits (norm 0): the unclipped share is ~1 > 0.5, so C shrinks by about exp(-0.2 * 0.5)."""
    global_state = {"a": torch.zeros(4, dtype=torch.float64)}
    settings = PrivacyConfig(mode="server", noise_multiplier=0.5, clip_norm=1.0, adaptive_clip=True)
    aggregator = PrivateAggregator(MaskedFedAvg("uniform"), settings, seed=3, num_clients=100, per_round=100)
    aggregator.aggregate(global_state, round_of(global_state, [["a"]] * 100))
    fraction = aggregator.record()["privacy"]["unclipped_noised"]
    assert aggregator.clip_norm == pytest.approx(torch.exp(torch.tensor(-0.2 * (fraction - 0.5))).item())
    assert 0.8 < fraction < 1.2  # the count's noise: stddev 100 / 20 over 100 clients


def test_client_modes_clip_on_the_client_and_local_mode_adds_the_whole_noise():
    z, c = 2.0, 0.5
    global_state = {"w": torch.zeros(ENTRIES, dtype=torch.float32)}
    trained = {"w": torch.full((ENTRIES,), 0.1)}  # norm 0.1 * sqrt(ENTRIES) = 14.1 > c
    plan = Plan((0,), clip_norm=c)
    clipped, metrics = privatize_upload(
        trained, global_state, plan, PrivacyConfig(mode="client", clip_norm=c, adaptive_clip=True), 9
    )
    assert float(clipped["w"].double().norm()) == pytest.approx(c, rel=1e-5) and metrics[UNCLIPPED] == 0.0
    settings = PrivacyConfig(mode="local", noise_multiplier=z, clip_norm=c)
    noised, _ = privatize_upload(trained, global_state, plan, settings, 9)
    low, high = variance_interval(z * c, ENTRIES)
    assert low <= float((noised["w"].double() - clipped["w"].double()).var()) <= high
    untouched, none = privatize_upload(trained, global_state, Plan((0,)), settings, 9)
    assert untouched is trained and none == {}  # no clip norm in the plan: privacy off for this client


def test_configure_hands_the_clip_norm_to_clients_only_in_client_modes():
    plans = {0: Plan((0,)), 1: Plan((1, 2))}
    for mode, expected in (("server", None), ("client", 0.3), ("local", 0.3)):
        settings = PrivacyConfig(mode=mode, clip_norm=0.3)
        aggregator = PrivateAggregator(MaskedFedAvg("uniform"), settings, seed=1, num_clients=4, per_round=2)
        assert {p.clip_norm for p in aggregator.configure(plans).values()} == {expected}
    assert Plan.from_json(Plan((1,), clip_norm=0.3).to_json()).clip_norm == 0.3
