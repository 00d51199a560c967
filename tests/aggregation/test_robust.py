"""Robust aggregation of masked updates on hand-made tensors: each tensor (Krum: each layer) is judged over exactly
the clients that uploaded it, an outlier does not move the result, and what a rule could not do is noted."""

from __future__ import annotations

import pytest
import torch

from fedhello.aggregation import AGGREGATORS
from fedhello.aggregation.robust import krum_selection
from fedhello.config import load_config
from fedhello.errors import ConfigError
from fedhello.plan import ClientUpdate, Plan

L0 = "m.encoder.layer.0.attention.query.lora_A.default.weight"
L0B = "m.encoder.layer.0.attention.query.lora_B.default.weight"
L1 = "m.encoder.layer.1.attention.query.lora_A.default.weight"
HEAD = "m.classifier.modules_to_save.default.weight"


def update(cid: int, tensors: dict[str, torch.Tensor], n: int = 1) -> ClientUpdate:
    return ClientUpdate(client_id=cid, plan=Plan((0,)), tensors=tensors, num_samples=n)


def state() -> dict[str, torch.Tensor]:
    return {L0: torch.zeros(2), L0B: torch.zeros(2), L1: torch.ones(2), HEAD: torch.zeros(3)}


def full(value: float, size: int = 2) -> torch.Tensor:
    return torch.full((size,), value)


def test_median_is_taken_per_coordinate_over_each_tensors_contributors_only():
    updates = [
        update(0, {L0: torch.tensor([1.0, 9.0]), HEAD: full(1.0, 3)}),
        update(1, {L0: torch.tensor([2.0, -5.0]), HEAD: full(3.0, 3)}),
        update(2, {L0: torch.tensor([100.0, 4.0])}),  # a wild value on one coordinate does not move it
        update(3, {HEAD: full(5.0, 3)}, n=1000),  # sample counts are ignored
    ]
    median = AGGREGATORS.get("median")()
    new = median.aggregate(state(), updates)
    assert torch.equal(new[L0], torch.tensor([2.0, 4.0]))
    assert torch.equal(new[HEAD], full(3.0, 3))  # clients 0, 1, 3 (not 2, who did not train it)
    assert torch.equal(new[L1], torch.ones(2)) and torch.equal(new[L0B], torch.zeros(2)), "nobody trained them"
    assert median.notes() == []
    pair = median.aggregate(state(), [update(0, {L1: full(1.0)}), update(1, {L1: full(3.0)})])
    assert torch.equal(pair[L1], full(2.0))  # an even count: the mean of the middle two
    assert median.notes() == ["median: layers 1 had at most 2 contributors, whose median is their mean"]


def test_trimmed_mean_drops_the_extremes_of_each_coordinate():
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    updates = [update(i, {L0: torch.tensor([v, -v])}) for i, v in enumerate(values)]
    trimmed = AGGREGATORS.get("trimmed_mean")("uniform", 0.2)  # floor(0.2 * 5) = 1 from each end
    assert torch.equal(trimmed.aggregate(state(), updates)[L0], torch.tensor([3.0, -3.0]))
    assert trimmed.notes() == []
    four = trimmed.aggregate(state(), updates[:4])  # floor(0.2 * 4) = 0: a plain mean, and said so
    assert torch.equal(four[L0], torch.tensor([2.5, -2.5]))
    assert trimmed.notes() == [
        "trimmed_mean: nothing trimmed on layers 0: fewer than 5 contributors (aggregation.trim_fraction 0.2), "
        "a plain mean there"
    ]
    wide = AGGREGATORS.get("trimmed_mean")("uniform", 0.4)  # floor(0.4 * 5) = 2: the median of five
    assert torch.equal(wide.aggregate(state(), updates)[L0], torch.tensor([3.0, -3.0]))


def test_krum_keeps_the_vectors_close_to_the_others():
    vectors = [torch.tensor([x, 0.0]) for x in (0.0, 0.1, 0.25, 0.45, 10.0)]
    assert krum_selection(vectors, 1) == [0, 1, 2, 3]  # m - f = 4 kept, in their order
    assert krum_selection(vectors, 0) == [0, 1, 2, 3, 4]  # f = 0: Multi-Krum keeps all
    with pytest.raises(ValueError, match="more than 4"):
        krum_selection(vectors[:4], 1)


def test_multi_krum_judges_each_layer_over_its_own_contributors():
    honest = [0.9, 1.0, 1.1, 1.2, 0.8]
    updates = [update(i, {L0: full(v), L0B: full(-v), L1: full(1 + v)}) for i, v in enumerate(honest)]
    # client 5 is hostile on layer 0 only, client 0 on layer 1 only: each layer drops its own outlier
    updates.append(update(5, {L0: full(50.0), L0B: full(-1.0), L1: full(2.0)}))
    updates[0] = update(0, {L0: full(0.9), L0B: full(-0.9), L1: full(30.0)})
    updates += [update(6, {HEAD: full(1.0, 3)}), update(7, {HEAD: full(7.0, 3)}), update(8, {HEAD: full(2.0, 3)})]
    krum = AGGREGATORS.get("multi_krum")("uniform", 1)
    new = krum.aggregate(state(), updates)
    torch.testing.assert_close(new[L0], full(1.0), rtol=0, atol=1e-6)  # clients 0-4: the 5 kept of 6
    torch.testing.assert_close(new[L0B], full(-1.0), rtol=0, atol=1e-6)  # a layer's tensors are judged together
    torch.testing.assert_close(new[L1], full((2.0 + 2.1 + 2.2 + 1.8 + 2.0) / 5), rtol=0, atol=1e-6)  # clients 1-5
    assert torch.equal(new[HEAD], full(2.0, 3)), "3 contributors are too few for f=1: the median"
    (note,) = krum.notes()
    assert "coordinate-wise median on layers head (contributors head: 3)" in note and "byzantine=1" in note


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "multi_krum"])
def test_robust_rules_refuse_truncated_uploads_and_keep_dtypes(name):
    aggregator = AGGREGATORS.get(name)()
    half = {k: v.half() for k, v in state().items()}
    new = aggregator.aggregate(half, [update(i, {L0: full(float(i)).half()}) for i in range(3)])
    assert new[L0].dtype == torch.float16 and torch.equal(new[L0], full(1.0).half())
    with pytest.raises(ValueError, match="rank-truncated"):
        aggregator.aggregate(state(), [update(0, {HEAD: torch.zeros(2)})])


def test_the_options_come_from_the_config_and_sample_weighting_is_refused():
    from fedhello.server.coordinator import AGGREGATORS as registry

    config = load_config(None, ["aggregation.name=trimmed_mean", "aggregation.trim_fraction=0.3"])
    assert registry.get("trimmed_mean").from_config(config.aggregation).trim_fraction == 0.3
    krum = load_config(None, ["aggregation.name=multi_krum", "aggregation.byzantine=2"])
    assert registry.get("multi_krum").from_config(krum.aggregation).byzantine == 2
    with pytest.raises(ConfigError) as info:
        load_config(None, ["aggregation.name=median", "aggregation.weighting=samples"])
    assert "'aggregation.weighting'" in str(info.value) and "use uniform" in str(info.value)
    with pytest.raises(ConfigError, match="'aggregation.trim_fraction'"):
        load_config(None, ["aggregation.trim_fraction=0.5"])
