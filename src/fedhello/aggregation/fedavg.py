"""Masked per-tensor FedAvg: each tensor is averaged over exactly the clients that trained it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from fedhello.aggregation.base import AGGREGATORS, Aggregator, client_weights, weighted_mean
from fedhello.plan import ClientUpdate, Upload


def masked_fedavg(
    global_state: dict[str, torch.Tensor],
    updates: Sequence[ClientUpdate],
    weighting: Literal["uniform", "samples"] = "uniform",
) -> dict[str, torch.Tensor]:
    """New global state. For every tensor, the (sample-)weighted mean of the clients that uploaded it,
    which equals W + mean(W_client - W) over those clients; tensors nobody trained stay unchanged.
    Pure: inputs are not modified. Every upload must have the global shape: averaging a rank-truncated
    factor would give the global state its shape (use `rank_fedavg`, `hetlora` or `flexlora` for those)."""
    new_state: dict[str, torch.Tensor] = {}
    for name, current in global_state.items():
        contributors = [u for u in updates if name in u.tensors]
        if not contributors:
            new_state[name] = current.clone()
            continue
        for u in contributors:
            if tuple(u.tensors[name].shape) != tuple(current.shape):
                raise ValueError(
                    f"fedavg: client {u.client_id} sent {name} with shape {list(u.tensors[name].shape)}, the global "
                    f"tensor is {list(current.shape)}; rank-truncated uploads need a rank-aware aggregator"
                )
        weights = client_weights(contributors, weighting)
        new_state[name] = weighted_mean([u.tensors[name] for u in contributors], weights, current)
    return new_state


@AGGREGATORS.register("fedavg")
class MaskedFedAvg(Aggregator):
    """Default aggregation for layer-heterogeneous methods (Fed-HeLLo, FedRA, FedIT) and FFA-LoRA (each tensor
    on its own, so B-only uploads are fine); not for rank-truncated uploads."""

    accepts = frozenset({Upload.FULL, Upload.ONE_FACTOR})
    averages = True

    def aggregate(self, global_state, updates):  # noqa: ANN001
        return masked_fedavg(global_state, updates, self.weighting)
