"""The budget profiler: measure representative layer sets once per model/config, fit the cost model,
cache the result.

A profile depends on the model, LoRA settings, batch size, sequence length, device and machine, so the
cache key hashes exactly those (`profile_key`). Profiles live in `$FEDHELLO_CACHE` or
`~/.cache/fedhello/profiles/<key>.json`.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedhello.config import RunConfig
from fedhello.models.layers import HEAD
from fedhello.models.quantize import weights_mb
from fedhello.models.recompute import supports_recompute
from fedhello.patterns import PATTERNS
from fedhello.resources.cost import CostModel
from fedhello.resources.measure import Measurement, measure_layers
from fedhello.resources.memory import meter_for
from fedhello.rundir import write_atomic

# Representative sets per budget k: the GD patterns plus the plain names users think in.
SET_KINDS: dict[str, str] = {
    "top": "inverted_triangle",
    "bottom": "triangle",
    "alternate": "uniform",
    "bottleneck": "bottleneck",
}


def representative_sets(num_layers: int, counts: Sequence[int]) -> list[tuple[str, tuple[int, ...]]]:
    """(label, layers) for head-only, all layers, and for each k the top-k, bottom-k, alternate
    (evenly spread) and bottleneck sets; duplicates keep their first label."""
    sets: list[tuple[str, tuple[int, ...]]] = [("all", tuple(range(num_layers))), ("head only", ())]
    seen = {s for _, s in sets}
    for k in sorted(set(counts)):
        for kind, pattern in SET_KINDS.items():
            layers = PATTERNS[pattern](num_layers, k)
            if layers not in seen:
                seen.add(layers)
                sets.append((f"{kind}-{k}", layers))
    return sets


def cache_dir() -> Path:
    return Path(os.environ.get("FEDHELLO_CACHE") or Path.home() / ".cache" / "fedhello") / "profiles"


def profile_key(config: RunConfig, device: str) -> str:
    """Hash of everything that changes a measurement."""
    parts = {
        "model": config.model.model_dump(mode="json"),
        "lora": config.lora.model_dump(mode="json"),
        "data": [config.data.source, config.data.path, config.data.subset, config.data.text_column],
        "batch_size": [config.train.batch_size, config.train.grad_accum],
        "precision": [config.train.precision, config.train.gradient_checkpointing],
        "device": device,
        "machine": [platform.node(), platform.machine(), os.cpu_count(), torch.__version__],
        "version": 4,  # 4: recomputation measured; the longest rows; grad_accum micro-batches a step
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Profile:
    """Measured costs of layer sets for one model/config, and the fitted cost models."""

    num_layers: int
    device: str
    memory_method: str
    batch_shape: list[int]
    measurements: list[Measurement]
    meta: dict[str, Any] = field(default_factory=dict)
    quantization: str = "none"  # how the base weights were loaded (`model.quantization`)
    weights_mb: float | None = None  # memory of the loaded model's tensors (`fedhello.models.quantize.weights_mb`)

    @property
    def measured_recompute(self) -> bool:
        """Whether the profile measured sets with recomputed activations (so the cost models know what
        recomputation costs and budgets may plan it)."""
        return any(m.recompute for m in self.measurements if m.mode == "freeze")

    @property
    def memory(self) -> CostModel | None:
        """Training memory (above the loaded model) of a layer set."""
        kept = [m for m in self.measurements if m.peak_mb is not None and m.mode == "freeze"]
        samples = [(m.layers, m.peak_mb, m.recompute) for m in kept]
        return CostModel.fit(samples, self.num_layers) if samples else None

    @property
    def total_memory(self) -> CostModel | None:
        """The whole memory of a client: the loaded weights plus training (the quantization term)."""
        memory = self.memory
        return memory.plus(self.weights_mb) if memory is not None and self.weights_mb is not None else None

    @property
    def time(self) -> CostModel:
        """Time of one optimizer step (all its micro-batches) of a layer set. On the CPU the process's CPU time
        (`Measurement.cpu_seconds`): the work itself, not what other processes on a shared machine add to the
        wall clock (with one thread the two agree on an idle machine); elsewhere the wall clock."""
        samples = [(m.layers, self.step_time(m), m.recompute) for m in self.measurements if m.mode == "freeze"]
        return CostModel.fit(samples, self.num_layers)

    def step_time(self, m: Measurement) -> float:
        """The step time the time model uses for a measurement (see `time`)."""
        return m.cpu_seconds if self.device == "cpu" and m.cpu_seconds is not None else m.step_seconds

    def find(self, layers: Sequence[int], recompute: int = 0) -> Measurement | None:
        wanted = tuple(sorted(layers))
        return next(
            (m for m in self.measurements if m.layers == wanted and m.mode == "freeze" and m.recompute == recompute),
            None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "num_layers": self.num_layers,
            "device": self.device,
            "memory_method": self.memory_method,
            "batch_shape": self.batch_shape,
            "measurements": [m.to_json() for m in self.measurements],
            "meta": self.meta,
            "quantization": self.quantization,
            "weights_mb": self.weights_mb,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Profile:
        return cls(
            num_layers=data["num_layers"],
            device=data["device"],
            memory_method=data["memory_method"],
            batch_shape=list(data["batch_shape"]),
            measurements=[Measurement.from_json(m) for m in data["measurements"]],
            meta=data.get("meta", {}),
            quantization=data.get("quantization", "none"),
            weights_mb=data.get("weights_mb"),
        )


@contextlib.contextmanager
def young_garbage_only() -> Iterator[None]:
    """Freeze (`gc.freeze`) the objects alive now -- modules, model, data -- for the duration: each measurement
    collects garbage before it starts, and a full collection over everything torch and transformers keep alive
    took ~0.4 s, most of a tiny model's profile. Frozen objects are not collected; the measurements' own
    garbage still is. Unfrozen afterwards, so the process is left as it was."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def measure_profile(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    layout: dict[str, int],
    batches: Sequence[dict[str, torch.Tensor]],
    num_layers: int,
    counts: Sequence[int],
    steps: int = 3,
    warmup: int = 1,
    on_measure: Callable[[Measurement], None] | None = None,
    quantization: str = "none",
    micro_batches: int = 1,
) -> Profile:
    """Measure every representative set on `batches` with its activations kept and, where the model can recompute
    them block by block and backward traverses at least two blocks, with all but the top block recomputed (what
    recomputation saves and costs at its most; the cost model interpolates between the two). A step is
    `micro_batches` micro-batches (`train.grad_accum`). The model's parameters and the global RNG state are left
    as they were, so profiling inside a run does not change the run."""
    device = next(model.parameters()).device
    measurements = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), young_garbage_only():
        # Unrecorded passes: the first backward of a process (and the first recomputing one) allocates one-time
        # buffers.
        recompute = supports_recompute(model)
        measure_layers(model, loss_fn, layout, batches, tuple(range(num_layers)), steps=0, warmup=1)
        if recompute:
            measure_layers(
                model, loss_fn, layout, batches, tuple(range(num_layers)), steps=0, warmup=1, recompute=num_layers - 1
            )
        has_head = any(index == HEAD for index in layout.values())
        for label, layers in representative_sets(num_layers, counts):
            if not layers and not has_head:  # a causal LM without a task head: nothing to train in "head only"
                continue
            depth = num_layers - min(layers) if layers else 0
            for blocks in (0, depth - 1) if recompute and depth >= 2 else (0,):
                m = measure_layers(
                    model,
                    loss_fn,
                    layout,
                    batches,
                    layers,
                    steps=steps,
                    warmup=warmup,
                    label=label + (f" recompute {blocks}" if blocks else ""),
                    recompute=blocks,
                    micro_batches=micro_batches,
                )
                measurements.append(m)
                if on_measure:
                    on_measure(m)
    return Profile(
        quantization=quantization,
        weights_mb=weights_mb(model),
        num_layers=num_layers,
        device=str(device),
        memory_method=meter_for(device).method,
        batch_shape=list(batches[0]["input_ids"].shape) if "input_ids" in batches[0] else [],
        measurements=measurements,
        meta={
            "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "steps": steps,
            "warmup": warmup,
            "micro_batches": micro_batches,
        },
    )


def profile_batches(task: Any, dataset: Any, batch_size: int, count: int = 2) -> list[dict[str, torch.Tensor]]:
    """`count` full batches of the split's longest rows (fixed, so every set sees the same data). Batches are
    padded to their longest row, so the longest rows are what a client's largest batch costs: a budget checked
    against them holds for every batch of the run."""
    n = min(len(dataset), batch_size * count)
    if n == 0:
        return []
    lengths = [len(ids) for ids in dataset["input_ids"]] if "input_ids" in dataset.column_names else None
    order = sorted(range(len(dataset)), key=lambda i: -lengths[i])[:n] if lengths else range(n)
    rows = [dataset[i] for i in order]
    return [task.collate(rows[i : i + batch_size]) for i in range(0, n, batch_size) if rows[i : i + batch_size]]


def tier_counts(config: RunConfig, num_layers: int) -> list[int]:
    """Layer counts to profile: the tiers' declared counts, or a spread when tiers only declare budgets."""
    counts = [t.layers for t in config.tiers if t.layers]
    if any(t.layers is None for t in config.tiers):
        counts += [max(1, num_layers // 3), max(1, num_layers // 2), max(1, 2 * num_layers // 3)]
    return sorted({min(k, num_layers) for k in counts})


def load_or_measure(
    config: RunConfig,
    device: str,
    measure: Callable[[], Profile],
    refresh: bool = False,
) -> tuple[Profile, Path, bool]:
    """The cached profile for this config, or a fresh one (then cached). Returns (profile, path, cached)."""
    path = cache_dir() / f"{profile_key(config, device)}.json"
    if path.is_file() and not refresh:
        try:
            return Profile.from_json(json.loads(path.read_text())), path, True
        except (ValueError, KeyError, TypeError):
            pass  # a corrupt or outdated cache entry is simply measured again
    profile = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(profile.to_json(), indent=1))
    return profile, path, False
