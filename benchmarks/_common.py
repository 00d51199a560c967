"""Shared set-up for the benchmark scripts: the configured model, fixed batches, and a header that records
the command, machine, load and date next to every figure (the machine may be shared: ratios are always
measured within one process, interleaved)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import torch

from fedhello.config import TrainConfig, load_config
from fedhello.experiment import Experiment, build_experiment
from fedhello.plan import ClientUpdate
from fedhello.resources.profile import profile_batches
from fedhello.resources.report import machine_line
from fedhello.runtime import quiet_libraries


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    # configs/default.yaml declares memory budgets, not layer counts; the benchmarks measure layer-count tiers
    p.add_argument("--config", default="configs/fed-hello.yaml", help="run config (model, batch, tiers)")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    return p


def header(title: str) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    print(f"# {title}")
    print(f"command: {' '.join([os.path.relpath(sys.argv[0])] + sys.argv[1:])}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch threads {torch.get_num_threads()}")
    print(f"machine: {machine_line()}")


def footer() -> None:
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


def setup(config_path: str, overrides: list[str], samples: int = 64) -> Experiment:
    """The configured task and LoRA model and the first `samples` preprocessed training samples (after the
    proxy set, as a run's profile takes them), built as every run builds them."""
    quiet_libraries()
    return build_experiment(load_config(config_path, overrides), train_samples=samples)


def batches(s: Experiment, count: int = 2) -> list[dict[str, torch.Tensor]]:
    return profile_batches(s.task, s.train, s.config.train.batch_size, count)


def tier_counts(s: Experiment) -> list[int]:
    return [t.layers or s.num_layers for t in s.config.tiers]


def work_done(update: ClientUpdate, num_samples: int, train: TrainConfig) -> tuple[int, int]:
    """(micro-batches, samples) the trainer went through to make `update`, from its own record of optimizer
    steps (`update.metrics["steps"]`): a benchmark credits the work done, never the client's whole data --
    `train.max_steps` may stop it early (the default config's 3 steps of 16 are 48 samples, not an epoch of 64)."""
    steps = int(update.metrics["steps"])
    sizes = [min(train.batch_size, num_samples - start) for start in range(0, num_samples, train.batch_size)]
    groups = [sizes[i : i + train.grad_accum] for i in range(0, len(sizes), train.grad_accum)]  # one step each
    chosen = [groups[step % len(groups)] for step in range(steps)] if groups else []
    return sum(len(g) for g in chosen), sum(sum(g) for g in chosen)


def cap_note(num_samples: int, train: TrainConfig) -> str:
    """One line saying whether the config's `train.max_steps` cuts a client's local epochs short."""
    per_epoch = -(-num_samples // (train.batch_size * train.grad_accum))  # optimizer steps per epoch
    planned = per_epoch * train.local_epochs
    if train.max_steps and train.max_steps < planned:
        return (
            f"capped by the config: train.max_steps={train.max_steps} stops a client after {train.max_steps} of "
            f"{planned} steps ({train.local_epochs} epoch(s) of {num_samples} samples); rates count the work done"
        )
    return f"not capped: {train.local_epochs} epoch(s) of {num_samples} samples, {planned} steps"


def timed(times: MutableMapping[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, adding the seconds of every call to `times[name]` (a `defaultdict(float)`)."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            times[name] += time.perf_counter() - started

    return wrapper
