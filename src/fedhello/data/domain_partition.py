"""Partitioners for the paper's splits: pathological label skew with Dirichlet share sizes, and feature
skew by domain (DomainNet domains, Dolly categories, Natural Instructions tasks), optionally combined
with label skew inside each domain.

All are `flwr_datasets` partitioners that compute every client's index list once, seeded, on first use.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
from datasets import Dataset
from flwr_datasets.partitioner import Partitioner

from fedhello.config import PartitionConfig
from fedhello.data.partition import LABEL_FREE, PARTITIONERS
from fedhello.errors import ConfigError


def pathological_shares(
    labels: np.ndarray,
    num_clients: int,
    classes_per_client: int,
    alpha: float,
    min_size: int,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Positions (into `labels`) held by each of `num_clients` clients.

    Every client holds `classes_per_client` classes, assigned round-robin over a seeded permutation of
    the classes so each class has (almost) the same number of holders. Each class's samples are split
    over its holders with proportions drawn from Dirichlet(alpha); every share gets at least `min_size`
    samples when the class has enough (the paper: 20 or 10 classes, Dirichlet(1.0), at least 10).
    """
    classes = np.unique(labels)
    k = min(classes_per_client, len(classes))
    order = rng.permutation(classes)
    holders: dict[int, list[int]] = {int(c): [] for c in classes}
    for client in range(num_clients):
        for j in range(k):
            holders[int(order[(client * k + j) % len(classes)])].append(client)
    shares: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for cls, owners in holders.items():
        if not owners:
            continue  # fewer client slots than classes: this class is held by nobody
        members = rng.permutation(np.flatnonzero(labels == cls))
        floor = min(min_size, len(members) // len(owners))
        sizes = floor + rng.multinomial(len(members) - floor * len(owners), rng.dirichlet([alpha] * len(owners)))
        for owner, part in zip(owners, np.split(members, np.cumsum(sizes)[:-1]), strict=True):
            shares[owner].append(part)
    return [np.sort(np.concatenate(s)) if s else np.array([], dtype=int) for s in shares]


class IndexPartitioner(Partitioner):
    """A partitioner that assigns every client an index list once, on first use."""

    def __init__(self, num_partitions: int, seed: int) -> None:
        super().__init__()
        self._num_partitions = num_partitions
        self._seed = seed
        self._indices: list[np.ndarray] | None = None

    @property
    def num_partitions(self) -> int:
        return self._num_partitions

    @abstractmethod
    def assign(self, dataset: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
        """Index list of every client."""

    def partition_indices(self) -> list[np.ndarray]:
        if self._indices is None:
            self._indices = self.assign(self.dataset, np.random.default_rng([self._seed, 11]))
        return self._indices

    def load_partition(self, partition_id: int) -> Dataset:
        return self.dataset.select(self.partition_indices()[partition_id].tolist())


def _column(dataset: Dataset, column: str, field: str) -> np.ndarray:
    if column not in dataset.column_names:
        raise ConfigError(field, f"column '{column}' is not in the data ({dataset.column_names})", "set the column")
    return np.asarray(dataset[column])


class PathologicalDirichletPartitioner(IndexPartitioner):
    """Label skew: each client holds `classes_per_client` classes, Dirichlet(alpha) share sizes."""

    def __init__(self, num_partitions: int, label_column: str, classes: int, alpha: float, min_size: int, seed: int):
        super().__init__(num_partitions, seed)
        self.label_column, self.classes, self.alpha, self.min_size = label_column, classes, alpha, min_size

    def assign(self, dataset: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
        labels = _column(dataset, self.label_column, "data.label_column")
        return pathological_shares(labels, self.num_partitions, self.classes, self.alpha, self.min_size, rng)


class DomainPartitioner(IndexPartitioner):
    """Feature skew: every client's data comes from a single domain (or, with more domains than clients,
    from whole domains only). With fewer domains than clients, clients are dealt to domains in turn
    (a seeded order), and a domain's samples are split among its clients: evenly at random, or, with
    `classes_per_client`, pathologically by label (feature skew combined with label skew)."""

    def __init__(
        self,
        num_partitions: int,
        domain_column: str,
        seed: int,
        label_column: str | None = None,
        classes: int | None = None,
        alpha: float = 1.0,
        min_size: int = 0,
    ) -> None:
        super().__init__(num_partitions, seed)
        self.domain_column, self.label_column = domain_column, label_column
        self.classes, self.alpha, self.min_size = classes, alpha, min_size

    def client_domains(self, domains: list) -> list[list]:
        """The domain(s) of every client."""
        rng = np.random.default_rng([self._seed, 13])
        n, g = self.num_partitions, len(domains)
        if g >= n:
            shuffled = [domains[i] for i in rng.permutation(g)]
            return [shuffled[c::n] for c in range(n)]
        clients = rng.permutation(n)
        owned: list[list] = [[] for _ in range(n)]
        for slot, client in enumerate(clients):
            owned[client] = [domains[slot % g]]
        return owned

    def assign(self, dataset: Dataset, rng: np.random.Generator) -> list[np.ndarray]:
        domain_of = _column(dataset, self.domain_column, "partition.domain_column")
        domains = sorted(np.unique(domain_of).tolist())
        owned = self.client_domains(domains)
        indices: list[np.ndarray] = [np.array([], dtype=int)] * self.num_partitions
        for domain in domains:
            members = np.flatnonzero(domain_of == domain)
            clients = [c for c, ds in enumerate(owned) if domain in ds]
            if len(clients) == 1:  # the whole domain belongs to one client
                indices[clients[0]] = np.concatenate([indices[clients[0]], members])
                continue
            if self.classes is not None and self.label_column is not None:
                labels = _column(dataset, self.label_column, "data.label_column")[members]
                parts = pathological_shares(labels, len(clients), self.classes, self.alpha, self.min_size, rng)
                parts = [members[p] for p in parts]
            else:
                parts = np.array_split(rng.permutation(members), len(clients))
            for client, part in zip(clients, parts, strict=True):
                indices[client] = np.sort(part)
        return [np.sort(i) for i in indices]


@PARTITIONERS.register("pathological_dirichlet")
def pathological_dirichlet(cfg: PartitionConfig, num_clients: int, label_column: str, seed: int) -> Partitioner:
    """The paper's non-IID split: `classes_per_client` classes per client, Dirichlet(`alpha`) share sizes,
    at least `min_size` samples per share."""
    return PathologicalDirichletPartitioner(
        num_clients, label_column, cfg.classes_per_client, cfg.alpha, cfg.min_size, seed
    )


LABEL_FREE.add("domain")  # splits by partition.domain_column only


@PARTITIONERS.register("domain")
def domain(cfg: PartitionConfig, num_clients: int, label_column: str, seed: int) -> Partitioner:
    """Feature skew: each client's data from one value of `partition.domain_column`."""
    return DomainPartitioner(num_clients, cfg.domain_column, seed)


@PARTITIONERS.register("domain_pathological")
def domain_pathological(cfg: PartitionConfig, num_clients: int, label_column: str, seed: int) -> Partitioner:
    """Feature and label skew: one domain per client, and `classes_per_client` classes of it."""
    return DomainPartitioner(
        num_clients, cfg.domain_column, seed, label_column, cfg.classes_per_client, cfg.alpha, cfg.min_size
    )
