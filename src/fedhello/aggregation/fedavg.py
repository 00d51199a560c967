"""Masked per-tensor FedAvg: each tensor is averaged over exactly the clients that trained it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from fedhello.aggregation.base import AGGREGATORS, Aggregator
from fedhello.plan import ClientUpdate


def masked_fedavg(
    global_state: dict[str, torch.Tensor],
    updates: Sequence[ClientUpdate],
    weighting: Literal["uniform", "samples"] = "uniform",
) -> dict[str, torch.Tensor]:
    """New global state. For every tensor, the (sample-)weighted mean of the clients that uploaded it,
    which equals W + mean(W_client - W) over those clients; tensors nobody trained stay unchanged.
    Pure: inputs are not modified."""
    new_state: dict[str, torch.Tensor] = {}
    for name, current in global_state.items():
        contributors = [u for u in updates if name in u.tensors]
        if not contributors:
            new_state[name] = current.clone()
            continue
        weights = torch.tensor(
            [float(u.num_samples) if weighting == "samples" else 1.0 for u in contributors], dtype=torch.float64
        )
        if weights.sum() <= 0:
            weights = torch.ones_like(weights)
        weights = weights / weights.sum()
        stacked = torch.stack([u.tensors[name].to(torch.float64) for u in contributors])
        mean = (stacked * weights.view(-1, *([1] * current.dim()))).sum(0)
        new_state[name] = mean.to(current.dtype)
    return new_state


@AGGREGATORS.register("fedavg")
class MaskedFedAvg(Aggregator):
    """Default aggregation for layer-heterogeneous methods (Fed-HeLLo, FedRA, FedIT)."""

    def aggregate(self, global_state, updates):  # noqa: ANN001
        return masked_fedavg(global_state, updates, self.weighting)
