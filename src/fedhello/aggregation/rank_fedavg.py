"""Masked FedAvg per entry, for uploads of differing ranks: clients upload truncated LoRA factors (see
`fedhello.models.ranks`), zero-padded back to the global rank r_max, and every entry is averaged over the clients
whose upload covers it. Used by LEGEND and by any rank-heterogeneous method that averages factors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from fedhello.aggregation.base import AGGREGATORS, Aggregator, sample_weights
from fedhello.models.ranks import coverage, pad
from fedhello.plan import ClientUpdate, Upload


def rank_masked_fedavg(
    global_state: dict[str, torch.Tensor],
    updates: Sequence[ClientUpdate],
    weighting: Literal["uniform", "samples"] = "uniform",
) -> dict[str, torch.Tensor]:
    """Every entry of every tensor is the weighted mean over the clients whose upload covers it (a rank-r
    client covers the first r components); entries nobody covered keep their value. With full-rank uploads
    this is exactly `masked_fedavg`. Pure."""
    new_state: dict[str, torch.Tensor] = {}
    for name, current in global_state.items():
        contributors = [u for u in updates if name in u.tensors]
        if not contributors:
            new_state[name] = current.clone()
            continue
        total = torch.zeros(current.shape, dtype=torch.float64)
        weight = torch.zeros(current.shape, dtype=torch.float64)
        for u, w in zip(contributors, sample_weights(contributors, weighting), strict=True):
            tensor = u.tensors[name].to(torch.float64)
            mask = coverage(name, tensor, current.shape).to(torch.float64)
            total += w * pad(name, tensor, current.shape)
            weight += w * mask
        covered = weight > 0
        out = current.to(torch.float64).clone()
        out[covered] = total[covered] / weight[covered]
        new_state[name] = out.to(current.dtype)
    return new_state


@AGGREGATORS.register("rank_fedavg")
class RankMaskedFedAvg(Aggregator):
    """Masked FedAvg per entry, for uploads of differing ranks (LEGEND); each tensor on its own."""

    accepts = frozenset({Upload.FULL, Upload.TRUNCATED, Upload.ONE_FACTOR})
    averages = True

    def aggregate(self, global_state, updates):  # noqa: ANN001
        return rank_masked_fedavg(global_state, updates, self.weighting)
