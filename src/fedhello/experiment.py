"""One way to build a run's model and data from its config. The federation (`fedhello.server`), the budget
profiler (`fedhello profile`) and the benchmarks all start here.

The order matters for reproducibility -- the LoRA and head initialisation draw from torch's global
generator: seed torch, load the data source, build the task and its LoRA model, check that the tiers fit
the model, shuffle the training split, hold out the proxy set, cap the splits, preprocess them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from datasets import Dataset

from fedhello.config import RunConfig
from fedhello.data import class_names, load_source
from fedhello.methods.compatibility import check_proxy_set, check_run_config
from fedhello.models.layers import model_depth, trainable_layout
from fedhello.tasks import TASKS, Task


@dataclass
class Experiment:
    """A run's task, LoRA model and preprocessed splits, before any client exists (`Federation` adds them)."""

    config: RunConfig
    task: Task
    model: torch.nn.Module
    layout: dict[str, int]  # federated parameter name -> transformer layer (HEAD for the task head)
    num_layers: int
    train: Dataset
    proxy: Dataset  # training samples held out for the server's Fisher importance
    test: Dataset
    label_names: list[str]


def _take(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def build_experiment(config: RunConfig, train_samples: int | None = None) -> Experiment:
    """Build the configured task, model and splits. `train_samples` keeps only that many training samples
    (the first ones after the proxy set, as a run's profile measures them) for tools that need a few."""
    task_class = TASKS.get(config.task)
    check_run_config(config)  # also when the config was validated before the pairing check was imported
    torch.manual_seed(config.seed)  # initialisation of LoRA and head
    raw = load_source(config.data, config.seed)
    label_names = class_names(raw["train"], config.data.label_column)
    task = task_class(config, num_labels=len(label_names))
    model = task.build_model()
    num_layers = model_depth(model)
    config.check_tier_layers(num_layers)

    train = raw["train"].shuffle(seed=config.seed)
    proxy_size = min(config.data.proxy_size, len(train) // 10)
    check_proxy_set(config, proxy_size, len(train))
    proxy, train = train.select(range(proxy_size)), train.select(range(proxy_size, len(train)))
    train = _take(_take(train, config.data.max_train_samples), train_samples)
    test = _take(raw["test"], config.data.max_test_samples)
    train, proxy, test = (task.preprocess(split) for split in (train, proxy, test))
    return Experiment(
        config=config,
        task=task,
        model=model,
        layout=trainable_layout(model.named_parameters()),
        num_layers=num_layers,
        train=train,
        proxy=proxy,
        test=test,
        label_names=label_names,
    )
