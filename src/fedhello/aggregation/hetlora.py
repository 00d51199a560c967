"""Aggregation for rank-heterogeneous uploads: element-wise masked FedAvg and HetLoRA.

Clients upload truncated LoRA factors (see `fedhello.training.ranks`); both rules zero-pad them back to the
global rank r_max and differ in how they weigh and normalise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from fedhello.aggregation.base import AGGREGATORS, Aggregator
from fedhello.allocation.base import Upload
from fedhello.plan import ClientUpdate
from fedhello.training.ranks import coverage, lora_factor, pad, partner_name


def _base_weights(updates: Sequence[ClientUpdate], weighting: str) -> list[float]:
    return [float(u.num_samples) if weighting == "samples" else 1.0 for u in updates]


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
        for u, w in zip(contributors, _base_weights(contributors, weighting), strict=True):
            tensor = u.tensors[name].to(torch.float64)
            mask = coverage(name, tensor, current.shape).to(torch.float64)
            total += w * pad(name, tensor, current.shape)
            weight += w * mask
        covered = weight > 0
        out = current.to(torch.float64).clone()
        out[covered] = total[covered] / weight[covered]
        new_state[name] = out.to(current.dtype)
    return new_state


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
            weights = _base_weights(contributors, weighting)
        else:
            a_name = name if factor == "A" else partner_name(name)
            b_name = partner_name(a_name)
            contributors = [u for u in updates if a_name in u.tensors and b_name in u.tensors]
            weights = [
                w * float(torch.linalg.matrix_norm(u.tensors[b_name].double() @ u.tensors[a_name].double()))
                for u, w in zip(contributors, _base_weights(contributors, weighting), strict=True)
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


@AGGREGATORS.register("rank_fedavg")
class RankMaskedFedAvg(Aggregator):
    """Masked FedAvg per entry, for uploads of differing ranks (LEGEND); each tensor on its own."""

    accepts = frozenset({Upload.FULL, Upload.TRUNCATED, Upload.ONE_FACTOR})

    def aggregate(self, global_state, updates):  # noqa: ANN001
        return rank_masked_fedavg(global_state, updates, self.weighting)


@AGGREGATORS.register("hetlora")
class HetLoRAAggregator(Aggregator):
    """HetLoRA: zero-pad to r_max, Frobenius-norm-weighted average; clients truncate back to their rank.
    Weights come from B_k A_k, so both factors of every pair must be uploaded (no FFA-LoRA)."""

    accepts = frozenset({Upload.FULL, Upload.TRUNCATED})

    def aggregate(self, global_state, updates):  # noqa: ANN001
        return hetlora_aggregate(global_state, updates, self.weighting)
