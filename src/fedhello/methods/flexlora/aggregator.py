"""FlexLoRA aggregation: average the full low-rank products, then re-factorise by SVD.

Averaging A and B separately is not averaging the updates (mean(B) mean(A) != mean(B A)). FlexLoRA forms
Delta W = sum_k w_k B_k A_k per LoRA pair (any mix of client ranks), takes its SVD and stores the top-r_max
factors B = U S^1/2, A = S^1/2 V^T, components in decreasing singular value. A client of rank r keeps the
first r components (see `fedhello.models.ranks`): the best rank-r approximation of Delta W.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from fedhello.aggregation.base import AGGREGATORS, Aggregator, client_weights, weighted_mean
from fedhello.models.ranks import lora_factor, partner_name
from fedhello.plan import ClientUpdate, Upload


def svd_factors(product: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) with B @ A the best rank-`rank` approximation of `product`, singular values split evenly."""
    u, s, vh = torch.linalg.svd(product, full_matrices=False)
    k = min(rank, s.shape[0])
    root = s[:k].sqrt()
    b = torch.zeros(product.shape[0], rank, dtype=product.dtype)
    a = torch.zeros(rank, product.shape[1], dtype=product.dtype)
    b[:, :k] = u[:, :k] * root
    a[:k] = root[:, None] * vh[:k]
    return b, a


def flexlora_aggregate(
    global_state: dict[str, torch.Tensor],
    updates: Sequence[ClientUpdate],
    weighting: Literal["uniform", "samples"] = "samples",
) -> dict[str, torch.Tensor]:
    """New global state: per LoRA pair, the SVD factors of the weighted mean of the clients' B_k A_k;
    non-LoRA tensors (the head) get the weighted mean. Exact (B A equals the mean product) whenever that
    mean has rank <= r_max. Pure; pairs nobody trained stay unchanged."""
    new_state: dict[str, torch.Tensor] = {}
    for name, current in global_state.items():
        if name in new_state:
            continue
        contributors = [u for u in updates if name in u.tensors]
        if lora_factor(name) is not None:
            partner = partner_name(name)
            contributors = [u for u in contributors if partner in u.tensors]
        if not contributors:
            new_state[name] = current.clone()
            continue
        weights = client_weights(contributors, weighting)
        if lora_factor(name) is None:
            new_state[name] = weighted_mean([u.tensors[name] for u in contributors], weights, current)
            continue
        a_name = name if lora_factor(name) == "A" else partner_name(name)
        b_name = partner_name(a_name)
        product = sum(
            w * (u.tensors[b_name].double() @ u.tensors[a_name].double())
            for u, w in zip(contributors, weights.tolist(), strict=True)
        )
        b, a = svd_factors(product, global_state[a_name].shape[0])
        new_state[a_name] = a.to(global_state[a_name].dtype)
        new_state[b_name] = b.to(global_state[b_name].dtype)
    return {name: new_state[name] for name in global_state}


@AGGREGATORS.register("flexlora")
class FlexLoRAAggregator(Aggregator):
    """FlexLoRA: SVD of the weighted sum of full products B_k A_k per layer (use weighting: samples).
    Needs both factors of every pair (no FFA-LoRA)."""

    accepts = frozenset({Upload.FULL, Upload.TRUNCATED})

    def aggregate(self, global_state, updates):  # noqa: ANN001
        return flexlora_aggregate(global_state, updates, self.weighting)
