"""The federation of a run: its experiment (task, model, data; `fedhello.experiment`) plus the clients --
their data partitions, their tiers and what their budgets allow. Built once from a config; engines share
it and differ only in how client training is dispatched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import Partitioner

from fedhello.config import RunConfig, TierConfig
from fedhello.data import build_partitioner
from fedhello.data.local_test import split_local_test
from fedhello.errors import FedHelloError
from fedhello.experiment import Experiment, build_experiment
from fedhello.models.quantize import resolve as resolve_quantization
from fedhello.resources.budgets import resolve_budgets
from fedhello.resources.cost import LayerConstraint
from fedhello.seeding import tier_rng


def assign_tiers(num_clients: int, tiers: list[TierConfig], seed: int) -> list[int]:
    """Tier index of every client: tier sizes by largest remainder of share * clients, then a seeded
    shuffle decides which client lands in which tier."""
    exact = np.array([t.share * num_clients for t in tiers])
    sizes = np.floor(exact).astype(int)
    remainder = num_clients - sizes.sum()
    for i in np.argsort(-(exact - sizes), kind="stable")[:remainder]:
        sizes[i] += 1
    labels = np.repeat(np.arange(len(tiers)), sizes)
    tier_rng(seed).shuffle(labels)
    return labels.tolist()


@dataclass
class Federation(Experiment):
    """An experiment with its clients: client c holds partition c of the training split and is in tier
    `client_tiers[c]`."""

    partitioner: Partitioner
    client_tiers: list[int]
    # per tier: what a memory_mb / seconds_per_step budget allows (None for count-only tiers)
    tier_constraints: list[LayerConstraint | None] = field(default_factory=list)

    def client_constraints(self) -> list[LayerConstraint | None]:
        """Each client's constraint, indexed by client id (for `DepthAwareAllocator`)."""
        return [self.tier_constraints[t] if self.tier_constraints else None for t in self.client_tiers]

    @property
    def holds_client_data(self) -> bool:
        """Whether the clients' data are partitions of this federation's training split (False when every
        SuperNode of a deployment holds its own, `flower.node_data`)."""
        return not self.config.flower.node_data

    def client_data(self, client_id: int) -> Dataset:
        """The training samples of one client (an index selection, loaded when asked)."""
        if not self.holds_client_data:
            raise FedHelloError(
                "flower.node_data: the clients' data are on the SuperNodes, not here "
                "(fix: run with --engine flower-deploy and SuperNodes started with --node-config 'data-path=...')"
            )
        return self._split(client_id)[0]

    def client_test(self, client_id: int) -> Dataset | None:
        """The client's local test split (`federation.local_test`; None when off)."""
        return self._split(client_id)[1]

    def _split(self, client_id: int) -> tuple[Dataset, Dataset | None]:
        if not self.holds_client_data:
            raise FedHelloError("flower.node_data: the clients' data are on the SuperNodes, not here")
        data = self.partitioner.load_partition(client_id)
        return split_local_test(data, self.config.federation.local_test, self.config.seed, client_id)

    def client_quantization(self, client_id: int) -> str:
        """How a client loads its base weights: its tier's quantization, else the run's."""
        return resolve_quantization(self.config.tiers[self.client_tiers[client_id]].quantization, self.config)

    def budget(self, client_id: int) -> int:
        """How many layers a client's tier may train."""
        return self.config.tiers[self.client_tiers[client_id]].layers

    @property
    def tier_budgets(self) -> list[int]:
        return [t.layers for t in self.config.tiers]


def build_federation(config: RunConfig) -> Federation:
    """The experiment of `config`, its budget tiers resolved to layer constraints (measuring and caching the
    profile the first time; fills `tiers[i].layers`), its partitioner and its tier assignment."""
    experiment = build_experiment(config)
    constraints = resolve_budgets(experiment)
    partitioner = build_partitioner(config.partition, config.federation.num_clients, "labels", config.seed)
    partitioner.dataset = experiment.train
    return Federation(
        **vars(experiment),
        partitioner=partitioner,
        client_tiers=assign_tiers(config.federation.num_clients, config.tiers, config.seed),
        tier_constraints=constraints,
    )
