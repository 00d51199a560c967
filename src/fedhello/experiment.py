"""One way to build a run's model and data from its config. The federation (`fedhello.server`), the budget
profiler (`fedhello profile`) and the benchmarks all start here.

The order matters for reproducibility -- the LoRA and head initialisation draw from torch's global
generator: seed torch, load the data source, build the task and its LoRA model, check that the tiers fit
the model, shuffle the training split, hold out the proxy set, cap the splits, preprocess them.

A SuperNode that holds its own data (`flower.node_data`) builds a `NodeExperiment` instead: the same task and
model, and its own rows labelled by the run's class names; it never loads the run's data source.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from datasets import Dataset

from fedhello.components import ALLOCATORS
from fedhello.config import RunConfig
from fedhello.data import class_names, load_source
from fedhello.data.node import load_node_data, with_run_labels
from fedhello.data.partition import check_labels
from fedhello.data.sources import data_name
from fedhello.errors import ConfigError, FedHelloError
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


@dataclass
class NodeExperiment:
    """What a SuperNode holding its own data needs to train: the task, the LoRA model and its own rows."""

    config: RunConfig
    task: Task
    model: torch.nn.Module
    layout: dict[str, int]
    train: Dataset  # every row of the node's data, preprocessed


def _task_and_model(config: RunConfig, num_labels: int) -> tuple[Task, torch.nn.Module, int]:
    """The configured task, its LoRA model and the model's depth (checked against the tiers)."""
    task = TASKS.get(config.task)(config, num_labels=num_labels)
    model = task.build_model()
    num_layers = model_depth(model)
    config.check_tier_layers(num_layers)
    return task, model, num_layers


def check_proxy_set(config: RunConfig, proxy_samples: int, train_samples: int) -> None:
    """When the federation is built: an importance strategy needs a non-empty proxy set. The loader caught
    `data.proxy_size: 0`; this catches a training split too small to hold one out (at most a tenth of it
    is used, so fewer than 10 samples leave none)."""
    if proxy_samples == 0 and ALLOCATORS.get(config.strategy.name).needs_importance:
        raise ConfigError(
            "data.proxy_size",
            f"the training split has {train_samples} samples, too few to hold out a proxy set (at most a tenth "
            f"of it), so strategy '{config.strategy.name}' has nothing to estimate Fisher importance on",
            "use at least 10 training samples, or a strategy without importance such as rgd",
        )


def _take(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def build_experiment(config: RunConfig, train_samples: int | None = None) -> Experiment:
    """Build the configured task, model and splits. `train_samples` keeps only that many training samples
    (the first ones after the proxy set, as a run's profile measures them) for tools that need a few."""
    TASKS.get(config.task)  # an unknown task fails before any data is read
    torch.manual_seed(config.seed)  # initialisation of LoRA and head
    raw = load_source(config.data, config.seed)
    check_labels(config.partition, raw["train"].column_names, config.data.label_column, data_name(config.data))
    label_names = config.data.label_names or class_names(raw["train"], config.data.label_column)
    if config.data.label_names:  # the run fixes the label ids: re-code the source's labels by name
        column = config.data.label_column
        raw = {
            name: with_run_labels(split, column, label_names, f"data split '{name}'", config.data.bad_labels)
            for name, split in raw.items()
        }
    task, model, num_layers = _task_and_model(config, len(label_names))

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


def build_node_experiment(config: RunConfig, data_path: str) -> NodeExperiment:
    """The task and model of `config` with the node's own data at `data_path` (`fedhello.data.node`), labelled
    by `data.label_names` (the server fills them in from its data source before sending the config)."""
    label_names = config.data.label_names
    if not label_names:
        raise FedHelloError("node data needs the run's class names (fix: set data.label_names in the run config)")
    torch.manual_seed(config.seed)
    task, model, _ = _task_and_model(config, len(label_names))
    rows = load_node_data(config.data, data_path, label_names).shuffle(seed=config.seed)
    return NodeExperiment(config, task, model, trainable_layout(model.named_parameters()), task.preprocess(rows))
