"""Everything a run needs, built once from a config: task, model, data, partitions and client tiers.

Engines share this set-up; only how client training is dispatched differs between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from datasets import Dataset
from flwr_datasets.partitioner import Partitioner

from fedhello.config import RunConfig, TierConfig
from fedhello.data import build_partitioner, load_source
from fedhello.errors import ConfigError
from fedhello.methods.compatibility import check_proxy_set
from fedhello.models.layers import num_blocks, trainable_layout
from fedhello.resources.budgets import resolve_budgets
from fedhello.resources.cost import LayerConstraint
from fedhello.tasks import TASKS, Task


def assign_tiers(num_clients: int, tiers: list[TierConfig], seed: int) -> list[int]:
    """Tier index of every client: tier sizes by largest remainder of share * clients, then a seeded
    shuffle decides which client lands in which tier."""
    exact = np.array([t.share * num_clients for t in tiers])
    sizes = np.floor(exact).astype(int)
    remainder = num_clients - sizes.sum()
    for i in np.argsort(-(exact - sizes), kind="stable")[:remainder]:
        sizes[i] += 1
    labels = np.repeat(np.arange(len(tiers)), sizes)
    np.random.default_rng([seed, 7]).shuffle(labels)
    return labels.tolist()


def client_seed(seed: int, round_num: int, client_id: int) -> int:
    """A deterministic seed for one client's training in one round."""
    return int(np.random.SeedSequence([seed, round_num, client_id]).generate_state(1)[0])


@dataclass
class Federation:
    config: RunConfig
    task: Task
    model: torch.nn.Module
    layout: dict[str, int]
    num_layers: int
    train: Dataset
    proxy: Dataset
    test: Dataset
    partitioner: Partitioner
    client_tiers: list[int]
    label_names: list[str]
    # per tier: what a memory_mb / seconds_per_step budget allows (None for count-only tiers)
    tier_constraints: list[LayerConstraint | None] = field(default_factory=list)

    def client_constraints(self) -> list[LayerConstraint | None]:
        """Each client's constraint, indexed by client id (for `DepthAwareAllocator`)."""
        return [self.tier_constraints[t] if self.tier_constraints else None for t in self.client_tiers]

    def client_data(self, client_id: int) -> Dataset:
        return self.partitioner.load_partition(client_id)

    def budget(self, client_id: int) -> int:
        return self.config.tiers[self.client_tiers[client_id]].layers

    @property
    def tier_budgets(self) -> list[int]:
        return [t.layers for t in self.config.tiers]


def _take(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset.select(range(min(limit, len(dataset)))) if limit else dataset


def build_federation(config: RunConfig) -> Federation:
    if config.task not in TASKS:
        raise ConfigError("task", f"unknown task '{config.task}'", f"use one of {TASKS.names()}")
    torch.manual_seed(config.seed)  # initialisation of LoRA and head
    raw = load_source(config.data, config.seed)
    label_feature = raw["train"].features[config.data.label_column]
    label_names = list(getattr(label_feature, "names", []))
    task = TASKS.get(config.task)(config, num_labels=len(label_names))
    model = task.build_model()
    num_layers = num_blocks(model.config if hasattr(model, "config") else model.base_model.config)
    for i, tier in enumerate(config.tiers):
        if tier.layers is not None and tier.layers > num_layers:
            raise ConfigError(
                f"tiers.{i}.layers",
                f"{tier.layers} is more than the model's {num_layers} layers",
                f"use at most {num_layers}",
            )

    train = raw["train"].shuffle(seed=config.seed)
    proxy_size = min(config.data.proxy_size, len(train) // 10)
    check_proxy_set(config, proxy_size, len(train))
    proxy, train = train.select(range(proxy_size)), train.select(range(proxy_size, len(train)))
    train = _take(train, config.data.max_train_samples)
    test = _take(raw["test"], config.data.max_test_samples)
    train, proxy, test = (task.preprocess(split) for split in (train, proxy, test))
    layout = trainable_layout(model.named_parameters())
    # budget tiers -> layer constraints (measures and caches the profile the first time; fills tiers[i].layers)
    constraints = resolve_budgets(config, task, model, layout, num_layers, train)

    partitioner = build_partitioner(config.partition, config.federation.num_clients, "labels", config.seed)
    partitioner.dataset = train
    return Federation(
        config=config,
        task=task,
        model=model,
        layout=layout,
        num_layers=num_layers,
        train=train,
        proxy=proxy,
        test=test,
        partitioner=partitioner,
        client_tiers=assign_tiers(config.federation.num_clients, config.tiers, config.seed),
        label_names=label_names,
        tier_constraints=constraints,
    )
