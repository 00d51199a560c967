"""Shared set-up for the benchmark scripts: the configured model, fixed batches, and a header that records
the command, machine, load and date next to every figure (the machine may be shared: ratios are always
measured within one process, interleaved)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from fedhello.config import RunConfig, load_config
from fedhello.data import load_source
from fedhello.models.layers import num_blocks, trainable_layout
from fedhello.resources.profile import profile_batches
from fedhello.resources.report import machine_line
from fedhello.runtime import quiet_libraries
from fedhello.tasks import TASKS


def parser(doc: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    p.add_argument("--config", default="configs/default.yaml", help="run config (model, batch, tiers)")
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


@dataclass
class Setup:
    config: RunConfig
    task: Any
    model: torch.nn.Module
    layout: dict[str, int]
    num_layers: int
    train: Any  # preprocessed training samples (the first `samples`)


def setup(config_path: str, overrides: list[str], samples: int = 64) -> Setup:
    """The configured task and LoRA model, and the first `samples` preprocessed training samples."""
    quiet_libraries()
    config = load_config(config_path, overrides)
    torch.manual_seed(config.seed)
    raw = load_source(config.data, config.seed)
    names = list(getattr(raw["train"].features[config.data.label_column], "names", []))
    task = TASKS.get(config.task)(config, num_labels=len(names))
    model = task.build_model()
    train = raw["train"].shuffle(seed=config.seed)
    train = task.preprocess(train.select(range(min(samples, len(train)))))
    num_layers = num_blocks(model.config if hasattr(model, "config") else model.base_model.config)
    return Setup(config, task, model, trainable_layout(model.named_parameters()), num_layers, train)


def batches(s: Setup, count: int = 2) -> list[dict[str, torch.Tensor]]:
    return profile_batches(s.task, s.train, s.config.train.batch_size, count)


def tier_counts(s: Setup) -> list[int]:
    return [t.layers or s.num_layers for t in s.config.tiers]
