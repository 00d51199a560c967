"""`partition.json`: what data and which tier every client holds, computed at the start of a run (the run
folder writer writes it). The report draws the label distribution per client from it; without it (older
runs) that section is skipped. Counts come from flwr-datasets' `compute_counts` over the run's own
partitioner, so they are exactly the samples each client trains on.
"""

from __future__ import annotations

from typing import Any

import pandas
from flwr_datasets.metrics import compute_counts

from fedhello.server.federation import Federation

UNLABELLED = "all rows (no label column)"


def partition_stats(federation: Federation) -> dict[str, Any]:
    """Label counts, sample count, tier and layer budget of every client of a `Federation`."""
    config = federation.config
    label_names = list(federation.label_names)
    if "labels" in federation.partitioner.dataset.column_names:
        counts = compute_counts(federation.partitioner, column_name="labels")
    else:  # data without labels (own instruction data): one bar per client, its sample count
        label_names = [UNLABELLED]
        sizes = [len(federation.partitioner.load_partition(i)) for i in range(federation.partitioner.num_partitions)]
        counts = pandas.DataFrame({0: sizes})
    # `compute_counts` lists only labels present in the training split; keep every class, in index order.
    num_labels = max(len(label_names), int(max(counts.columns, default=-1)) + 1)
    counts = counts.reindex(columns=range(num_labels), fill_value=0)
    if len(label_names) < num_labels:
        label_names += [str(i) for i in range(len(label_names), num_labels)]
    clients = []
    for client_id, row in counts.iterrows():
        tier = int(federation.client_tiers[int(client_id)])
        label_counts = [int(v) for v in row.tolist()]
        clients.append(
            {
                "id": int(client_id),
                "tier": tier,
                "budget": int(config.tiers[tier].layers),
                "num_samples": sum(label_counts),
                "label_counts": label_counts,
            }
        )
    return {
        "partition": config.partition.model_dump(mode="json"),
        "label_names": label_names,
        "tiers": [t.model_dump(mode="json") for t in config.tiers],
        "num_layers": int(federation.num_layers),
        "proxy_size": len(federation.proxy),
        "test_size": len(federation.test),
        "clients": clients,
    }
