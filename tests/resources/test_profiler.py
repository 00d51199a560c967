"""Measuring layer sets on a tiny model, representative sets, and the profile cache."""

import json

import torch

from fedhello.resources.measure import Measurement
from fedhello.resources.memory import RssMeter, meter_for
from fedhello.resources.profile import Profile, load_or_measure, representative_sets


def test_representative_sets_cover_patterns_once():
    sets = representative_sets(6, [3, 4, 6])
    layer_sets = [s for _, s in sets]
    assert len(layer_sets) == len(set(layer_sets))
    labels = dict((s, label) for label, s in sets)
    assert labels[tuple(range(6))] == "all" and labels[()] == "head only"
    assert labels[(3, 4, 5)] == "top-3" and labels[(0, 1, 2)] == "bottom-3"
    assert labels[(0, 2, 4)] == "alternate-3" and labels[(0, 1, 5)] == "bottleneck-3"
    assert labels[(0, 1, 4, 5)] == "bottleneck-4"


# Peak RSS is a per-process high-water mark, so the comparison runs in a fresh process (as the profiler does):
# inside a long pytest process freed memory is reused and the peaks of small layer sets read as 0.
MEASURE_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from datasets import load_from_disk
from fedhello.config import load_config
from fedhello.models.layers import num_blocks, trainable_layout
from fedhello.resources.measure import measure_layers
from fedhello.resources.profile import profile_batches
from fedhello.tasks import TASKS
config = load_config(sys.argv[1])
task = TASKS.get(config.task)(config, num_labels=4)
torch.manual_seed(0)
model = task.build_model()
data = task.preprocess(load_from_disk(config.data.path).select(range(128)))
batches = profile_batches(task, data, 128, count=1)  # a wide batch: one block's activations dwarf noise
layout, top_layer = trainable_layout(model.named_parameters()), num_blocks(model.config) - 1
before = {n: p.detach().clone() for n, p in model.named_parameters()}
grads = {n: p.requires_grad for n, p in model.named_parameters()}
# process warm-up, as a run's profile does it: every layer, then every layer recomputing (first uses of autograd,
# AdamW and the recomputation machinery allocate one-time buffers that would be charged to the first case)
measure_layers(model, task.loss, layout, batches, range(top_layer + 1), steps=1, warmup=0)
measure_layers(model, task.loss, layout, batches, range(top_layer + 1), steps=1, warmup=0, recompute=top_layer)
out = {}
cases = (("top", (top_layer,), "freeze", 0), ("bottom", (0,), "freeze", 0), ("top_lr0", (top_layer,), "lr0", 0),
         ("bottom_recompute", (0,), "freeze", top_layer))
for key, layers, mode, recompute in cases:
    m = measure_layers(model, task.loss, layout, batches, layers, mode=mode, steps=1, warmup=1, recompute=recompute)
    out[key] = {"peak_mb": m.peak_mb, "step_seconds": m.step_seconds, "mode": m.mode, "recompute": m.recompute}
# a peak's noise only adds (one-time allocations, heap growth), so the lower of two readings is the better one
again = measure_layers(model, task.loss, layout, batches, (0,), steps=1, warmup=1, recompute=top_layer)
out["bottom_recompute"]["peak_mb"] = min(out["bottom_recompute"]["peak_mb"], again.peak_mb)
from fedhello.models.recompute import block_modules
out["recompute_off_after"] = not any(b.gradient_checkpointing for b in block_modules(model).values())
out["unchanged"] = all(torch.equal(p, before[n]) for n, p in model.named_parameters())
out["requires_grad_kept"] = grads == {n: p.requires_grad for n, p in model.named_parameters()}
print(json.dumps(out))
"""


def test_frozen_low_layers_cost_less_lr0_costs_more_and_recomputation_saves(tiny_config, wide_model_dir, tmp_path):
    import os
    import subprocess
    import sys

    import yaml

    tree = tiny_config.model_dump(mode="json")
    tree["model"]["name_or_path"] = str(wide_model_dir)
    config_path = tmp_path / "wide.yaml"
    config_path.write_text(yaml.safe_dump(tree))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", MEASURE_SCRIPT, str(config_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    top, bottom, top_lr0 = out["top"], out["bottom"], out["top_lr0"]
    assert top["step_seconds"] > 0 and top["mode"] == "freeze" and top_lr0["mode"] == "lr0"
    assert RssMeter.available(), "the peak-memory meter needs /proc/self/status (Linux)"
    assert meter_for(torch.device("cpu")).method != "none"
    assert top["peak_mb"] < bottom["peak_mb"], "backward must stop at the lowest trained layer"
    assert top["peak_mb"] < top_lr0["peak_mb"], "lr=0 keeps activations and AdamW state for every layer"
    # recomputing the blocks below the top keeps one block's activations instead of all four: it saves at least
    # half of what reaching down to layer 0 adds to the top layer's peak
    recomputed = out["bottom_recompute"]
    assert recomputed["recompute"] == 3
    assert recomputed["peak_mb"] < (top["peak_mb"] + bottom["peak_mb"]) / 2, (top, recomputed, bottom)
    # measuring leaves the model as it was: parameters, requires_grad and recomputation off
    assert out["unchanged"] and out["requires_grad_kept"] and out["recompute_off_after"]


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


def test_a_profiled_step_is_every_micro_batch_of_an_optimizer_step(tiny_config):
    # train.grad_accum: a time budget is per optimizer step, so the profile times all its micro-batches
    from fedhello.experiment import build_experiment
    from fedhello.resources.measure import measure_layers
    from fedhello.resources.profile import profile_batches

    experiment = build_experiment(tiny_config)
    batches = profile_batches(experiment.task, experiment.train, 32, count=2)
    layers = tuple(range(experiment.num_layers))
    one, four = (
        measure_layers(experiment.model, experiment.task.loss, experiment.layout, batches, layers, steps=5,
                       warmup=2, micro_batches=n)
        for n in (1, 4)
    )
    assert four.cpu_seconds > 2.5 * one.cpu_seconds, (one, four)
