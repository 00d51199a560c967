"""HetLoRA's aggregation: clients upload truncated LoRA factors (see `fedhello.models.ranks`), zero-padded back to
the global rank r_max and averaged with weights proportional to the norm of each client's update."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from fedhello.aggregation.base import AGGREGATORS, Aggregator, sample_weights
from fedhello.models.ranks import lora_factor, pad, partner_name
from fedhello.plan import ClientUpdate, Upload


def hetlora_aggregate(
    global_state: dict[str, torch.Tensor],
    updates: Sequence[ClientUpdate],
    weighting: Literal["uniform", "samples"] = "uniform",
) -> dict[str, torch.Tensor]:
    """HetLoRA: per LoRA pair, client k's zero-padded factors are averaged with weight proportional to
    ||B_k A_k||_F (its update's Frobenius norm; times its sample count with `samples`), so clients that
    moved further count more. Components beyond a client's rank count as zeros (the zero padding), which
    shrinks the high-rank components that only strong clients train. Non-LoRA tensors (the head) use the
    plain weighted mean. Pure; tensors nobody sent stay unchanged."""
    new_state: dict[str, torch.Tensor] = {}
    for name, current in global_state.items():
        factor = lora_factor(name)
        if factor is None:
            contributors = [u for u in updates if name in u.tensors]
            weights = sample_weights(contributors, weighting)
        else:
            a_name = name if factor == "A" else partner_name(name)
            b_name = partner_name(a_name)
            contributors = [u for u in updates if a_name in u.tensors and b_name in u.tensors]
            weights = [
                w * float(torch.linalg.matrix_norm(u.tensors[b_name].double() @ u.tensors[a_name].double()))
                for u, w in zip(contributors, sample_weights(contributors, weighting), strict=True)
            ]
        if not contributors:
            new_state[name] = current.clone()
            continue
        total_weight = sum(weights)
        if total_weight <= 0:  # e.g. nobody moved: plain mean
            weights, total_weight = [1.0] * len(contributors), float(len(contributors))
        out = torch.zeros(current.shape, dtype=torch.float64)
        for u, w in zip(contributors, weights, strict=True):
            out += (w / total_weight) * pad(name, u.tensors[name].to(torch.float64), current.shape)
        new_state[name] = out.to(current.dtype)
    return new_state


@AGGREGATORS.register("hetlora")
class HetLoRAAggregator(Aggregator):
    """HetLoRA: zero-pad to r_max, Frobenius-norm-weighted average; clients truncate back to their rank.
    Weights come from B_k A_k, so both factors of every pair must be uploaded (no FFA-LoRA)."""

    accepts = frozenset({Upload.FULL, Upload.TRUNCATED})

    def aggregate(self, global_state, updates):  # noqa: ANN001
        return hetlora_aggregate(global_state, updates, self.weighting)
