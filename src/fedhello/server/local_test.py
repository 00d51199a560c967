"""Personalised evaluation in a round record (`federation.local_test`): the clients' scores on their local test
splits, per client and summarised. Definitions: docs/compare.md, Personalised evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedhello.plan import LOCAL_TEST, ClientUpdate

KINDS = ("global", "personal")  # the received global model; the client's personalised model after training


def spread(values: dict[int, float], sizes: dict[int, float]) -> dict[str, Any]:
    """Per-client values (keyed by client id, as text: JSON) and their mean (unweighted), mean weighted by each
    client's local-test size, standard deviation (population, over clients), minimum and maximum."""
    ids = sorted(values)
    v = np.array([values[c] for c in ids], dtype=np.float64)
    w = np.array([sizes[c] for c in ids], dtype=np.float64)
    return {
        "clients": {str(c): values[c] for c in ids},
        "mean": float(v.mean()),
        "weighted_mean": float((v * w).sum() / w.sum()) if w.sum() > 0 else float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
    }


def local_test_record(updates: Sequence[ClientUpdate]) -> dict[str, Any] | None:
    """{"global": spread, "personal": spread} over the updates that carry each score (None when none does)."""
    sizes = {u.client_id: u.metrics.get(f"{LOCAL_TEST}samples", 0.0) for u in updates}
    out = {}
    for kind in KINDS:
        values = {u.client_id: u.metrics[f"{LOCAL_TEST}{kind}"] for u in updates if f"{LOCAL_TEST}{kind}" in u.metrics}
        if values:
            out[kind] = spread(values, sizes)
    return out or None
