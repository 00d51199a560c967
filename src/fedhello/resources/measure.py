"""Measure one layer set: peak memory and median step time of local training on fixed batches.

`freeze` is what fedhello does (only the set's LoRA tensors and the head require grad; AdamW holds state
for them only). `lr0` is the official Fed-HeLLo code's approach, kept for the benchmark: every LoRA tensor
requires grad and gets AdamW state, the untrained layers sit in a parameter group with learning rate 0.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch

from fedhello.models.adapter import freeze_for_plan
from fedhello.models.layers import HEAD, keys_for_layers
from fedhello.models.recompute import block_modules, recomputed_blocks, set_recompute
from fedhello.plan import Plan
from fedhello.resources.memory import meter_for

Mode = Literal["freeze", "lr0"]


@dataclass
class Measurement:
    """Cost of training one layer set: `peak_mb` added over the loaded model, median `step_seconds`."""

    layers: tuple[int, ...]
    peak_mb: float | None
    step_seconds: float
    mode: str = "freeze"
    label: str = ""
    # median CPU time of this process per step: robust to other processes on a shared machine, so the
    # benchmarks compare it (with one thread it equals the wall time of an idle machine)
    cpu_seconds: float | None = None
    recompute: int = 0  # blocks that recomputed their activations (`Plan.recompute`)

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = list(self.layers)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        return cls(**{**data, "layers": tuple(data["layers"])})


def _optimizer(
    model: torch.nn.Module, layout: dict[str, int], layers: Sequence[int], mode: Mode, lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    plan = Plan(tuple(layers))
    params = dict(model.named_parameters())
    if mode == "freeze":
        names = freeze_for_plan(model, layout, plan)
        return torch.optim.AdamW([params[n] for n in names], lr=lr, weight_decay=weight_decay)
    trained = set(keys_for_layers(layout, plan.layers, head=True))
    for name, param in model.named_parameters():
        param.requires_grad_(name in layout)
    groups = [
        {"params": [params[n] for n in layout if n in trained], "lr": lr},
        {"params": [params[n] for n in layout if n not in trained and layout[n] != HEAD], "lr": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, weight_decay=weight_decay)


def measure_layers(
    model: torch.nn.Module,
    loss_fn: Any,
    layout: dict[str, int],
    batches: Sequence[dict[str, torch.Tensor]],
    layers: Sequence[int],
    *,
    mode: Mode = "freeze",
    steps: int = 5,
    warmup: int = 2,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    label: str = "",
    recompute: int = 0,
    micro_batches: int = 1,
) -> Measurement:
    """Train `layers` for `warmup + steps` optimizer steps of `micro_batches` micro-batches each on `batches`
    (cycled), recomputing the activations of `recompute` blocks from the lowest trained layer up; return the peak
    memory over all of them (the first allocates the optimizer state) and the median time of the steps after
    warm-up.

    The model's trainable parameters and recomputation flags are restored afterwards (recomputation off), so
    measurements do not depend on order.
    """
    device = next(model.parameters()).device
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters() if n in layout}
    grads_before = {n: p.requires_grad for n, p in model.named_parameters()}
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]
    model.train()
    if recompute:
        set_recompute(model, recomputed_blocks(tuple(layers), recompute, len(block_modules(model))))
    gc.collect()
    meter = meter_for(device)
    meter.start()
    optimizer = _optimizer(model, layout, layers, mode, lr, weight_decay)
    times: list[float] = []
    cpu_times: list[float] = []
    warmup = max(warmup, 1)
    micro_batches = max(micro_batches, 1)
    for step in range(warmup + steps):
        started, cpu_started = time.perf_counter(), time.process_time()
        optimizer.zero_grad(set_to_none=True)
        for micro in range(micro_batches):
            loss = loss_fn(model, batches[(step * micro_batches + micro) % len(batches)])
            (loss / micro_batches).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
        cpu_times.append(time.process_time() - cpu_started)
        del loss
    peak = meter.peak_mb()
    optimizer.zero_grad(set_to_none=True)
    del optimizer
    if recompute:
        set_recompute(model, ())
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in snapshot:
                param.copy_(snapshot[name])
            param.requires_grad_(grads_before[name])
    gc.collect()
    return Measurement(
        layers=tuple(sorted(layers)),
        peak_mb=peak,
        step_seconds=statistics.median(times[warmup:] or times),
        cpu_seconds=statistics.median(cpu_times[warmup:] or cpu_times),
        mode=mode,
        label=label,
        recompute=recompute,
    )
