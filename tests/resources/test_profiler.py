"""Measuring layer sets on a tiny model, representative sets, and the profile cache."""

import json

import pytest
import torch

from fedhello.models.layers import num_blocks, trainable_layout
from fedhello.resources.measure import Measurement, measure_layers
from fedhello.resources.memory import RssMeter, meter_for
from fedhello.resources.profile import Profile, load_or_measure, profile_batches, representative_sets
from fedhello.tasks import TASKS


def test_representative_sets_cover_patterns_once():
    sets = representative_sets(6, [3, 4, 6])
    layer_sets = [s for _, s in sets]
    assert len(layer_sets) == len(set(layer_sets))
    labels = dict((s, label) for label, s in sets)
    assert labels[tuple(range(6))] == "all" and labels[()] == "head only"
    assert labels[(3, 4, 5)] == "top-3" and labels[(0, 1, 2)] == "bottom-3"
    assert labels[(0, 2, 4)] == "alternate-3" and labels[(0, 1, 5)] == "bottleneck-3"
    assert labels[(0, 1, 4, 5)] == "bottleneck-4"


@pytest.fixture
def tiny_parts(tiny_config):
    from datasets import load_from_disk

    config = tiny_config.model_copy(deep=True)
    task = TASKS.get(config.task)(config, num_labels=4)
    torch.manual_seed(0)
    model = task.build_model()
    data = task.preprocess(load_from_disk(config.data.path).select(range(128)))
    # a wide batch so that activations of one block (~0.5 MiB) dwarf allocator noise
    batches = profile_batches(task, data, 128, count=1)
    return model, task, trainable_layout(model.named_parameters()), batches, num_blocks(model.config)


def test_frozen_low_layers_cost_less_and_lr0_costs_more(tiny_parts):
    model, task, layout, batches, num_layers = tiny_parts
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    measure_layers(model, task.loss, layout, batches, range(num_layers), steps=1, warmup=0)  # process warm-up
    top = measure_layers(model, task.loss, layout, batches, (num_layers - 1,), steps=1, warmup=1)
    bottom = measure_layers(model, task.loss, layout, batches, (0,), steps=1, warmup=1)
    top_lr0 = measure_layers(model, task.loss, layout, batches, (num_layers - 1,), mode="lr0", steps=1, warmup=1)
    assert top.step_seconds > 0 and top.mode == "freeze" and top_lr0.mode == "lr0"
    if RssMeter.available():
        assert top.peak_mb < bottom.peak_mb, "backward must stop at the lowest trained layer"
        assert top.peak_mb < top_lr0.peak_mb, "lr=0 keeps activations and AdamW state for every layer"
    # measuring leaves the model as it was: parameters and requires_grad
    for name, param in model.named_parameters():
        assert torch.equal(param, before[name]), name
    assert meter_for(torch.device("cpu")).method != "none" or not RssMeter.available()


def test_profile_is_cached_per_config(tiny_config, tmp_path, monkeypatch):
    monkeypatch.setenv("FEDHELLO_CACHE", str(tmp_path))
    calls = []

    def measure():
        calls.append(1)
        return Profile(4, "cpu", "test", [8, 16], [Measurement((0, 1), 10.0, 0.1), Measurement((), 1.0, 0.05)])

    first, path, cached = load_or_measure(tiny_config, "cpu", measure)
    assert not cached and path.is_file() and len(calls) == 1
    again, path2, cached = load_or_measure(tiny_config, "cpu", measure)
    assert cached and path2 == path and len(calls) == 1
    assert again.to_json() == first.to_json()
    other = tiny_config.model_copy(deep=True)
    other.train.batch_size = 4  # a different batch is a different profile
    _, path3, cached = load_or_measure(other, "cpu", measure)
    assert not cached and path3 != path and len(calls) == 2
    path.write_text("{broken")
    _, _, cached = load_or_measure(tiny_config, "cpu", measure)
    assert not cached and json.loads(path.read_text())["num_layers"] == 4
