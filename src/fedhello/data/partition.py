"""Client partitioners over `datasets.Dataset` objects, built on `flwr-datasets`.

Each entry takes the partition config, the number of clients, the label column and a seed, and returns a
`flwr_datasets` partitioner whose `load_partition(client_id)` gives that client's data. Partitions are
index selections, so holding many clients costs no copies of the data.
"""

from __future__ import annotations

from flwr_datasets.partitioner import (
    DirichletPartitioner,
    IidPartitioner,
    Partitioner,
    PathologicalPartitioner,
)

from fedhello.config import PartitionConfig
from fedhello.errors import ConfigError
from fedhello.registry import Registry

PARTITIONERS: Registry = Registry("partitioner", "partition.kind")
# partitioners that never read the label column; every other one splits the clients by label. Partitioners
# registered elsewhere add themselves (`fedhello.data.domain_partition`).
LABEL_FREE: set[str] = {"iid"}


def check_labels(cfg: PartitionConfig, columns: list[str], label_column: str, where: str) -> None:
    """Refuse, in one line, a label-skew partition of data (`where`) that has no label column."""
    if cfg.kind not in LABEL_FREE and label_column not in columns:
        raise ConfigError(
            "partition.kind",
            f"'{cfg.kind}' splits the clients by label, and {where} has no label column '{label_column}' "
            f"(its columns: {', '.join(columns)})",
            f"use a partition.kind that needs no labels ({', '.join(sorted(LABEL_FREE))}), or set data.label_column "
            "to a column that groups the rows",
        )


@PARTITIONERS.register("iid")
def iid(cfg: PartitionConfig, num_clients: int, label_column: str, seed: int) -> Partitioner:
    """Equal contiguous shards of the (already shuffled) training split."""
    return IidPartitioner(num_partitions=num_clients)


@PARTITIONERS.register("dirichlet")
def dirichlet(cfg: PartitionConfig, num_clients: int, label_column: str, seed: int) -> Partitioner:
    """Label skew: each class is split over clients with Dirichlet(alpha) proportions."""
    return DirichletPartitioner(
        num_partitions=num_clients,
        partition_by=label_column,
        alpha=cfg.alpha,
        min_partition_size=cfg.min_size,
        self_balancing=True,
        seed=seed,
    )


@PARTITIONERS.register("pathological")
def pathological(cfg: PartitionConfig, num_clients: int, label_column: str, seed: int) -> Partitioner:
    """Each client holds exactly `classes_per_client` classes (the paper's non-IID splits)."""
    return PathologicalPartitioner(
        num_partitions=num_clients,
        partition_by=label_column,
        num_classes_per_partition=cfg.classes_per_client,
        class_assignment_mode="first-deterministic",
        seed=seed,
    )


def build_partitioner(cfg: PartitionConfig, num_clients: int, label_column: str, seed: int) -> Partitioner:
    """The configured partitioner (`partition.kind`) of `num_clients` clients."""
    return PARTITIONERS.get(cfg.kind)(cfg, num_clients, label_column, seed)
