"""Rank heterogeneity on one shared rank-`r_max` adapter.

A client of rank r uses the first r components of every LoRA pair: rows `[:r]` of `lora_A` (shape r_max x in)
and columns `[:, :r]` of `lora_B` (shape out x r_max). Zeroing the other components makes the client's
forward pass exactly that of a rank-r adapter, and they stay zero while training: their gradients are
products with the zeroed partner (dL/dB[:, j] is proportional to A[j], dL/dA[j] to B[:, j]), and AdamW moves
neither a zero-gradient nor a zero-valued entry. The client uploads the truncated factors, so rank
heterogeneity saves real bytes. The server zero-pads them back to r_max.

Scale: peft multiplies every module's B A by alpha / r_max, and a rank-r client keeps that scale, so it is a rank-r
adapter with scale alpha / r_max. HetLoRA trains it with scale alpha / r instead (`fedhello.methods.hetlora`) and
converts what it uploads back to the server's alpha / r_max convention, so aggregation never mixes scales.
"""

from __future__ import annotations

from typing import Literal

import torch

Factor = Literal["A", "B"]


def lora_factor(name: str) -> Factor | None:
    """Which LoRA factor a parameter name is ("A", "B"), or None for anything else (e.g. the head)."""
    if ".lora_A." in name:
        return "A"
    if ".lora_B." in name:
        return "B"
    return None


def partner_name(name: str) -> str:
    """The other factor of the same LoRA pair (`lora_A` <-> `lora_B`)."""
    if ".lora_A." in name:
        return name.replace(".lora_A.", ".lora_B.")
    return name.replace(".lora_B.", ".lora_A.")


def tensor_rank(name: str, tensor: torch.Tensor) -> int | None:
    """The rank a LoRA factor carries (rows of A, columns of B)."""
    factor = lora_factor(name)
    if factor == "A":
        return tensor.shape[0]
    if factor == "B":
        return tensor.shape[1]
    return None


def truncate(name: str, tensor: torch.Tensor, rank: int | None) -> torch.Tensor:
    """The first `rank` components of a LoRA factor (unchanged for non-LoRA tensors or rank None)."""
    factor = lora_factor(name)
    if rank is None or factor is None:
        return tensor
    return tensor[:rank].clone() if factor == "A" else tensor[:, :rank].clone()


def pad(name: str, tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Zero-pad a truncated LoRA factor back to the full `shape` (inverse of `truncate` on the kept part)."""
    if tuple(tensor.shape) == tuple(shape):
        return tensor
    out = torch.zeros(shape, dtype=tensor.dtype)
    if lora_factor(name) == "A":
        out[: tensor.shape[0]] = tensor
    else:
        out[:, : tensor.shape[1]] = tensor
    return out


def coverage(name: str, tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Boolean mask of the entries of the full-shape tensor that a (possibly truncated) upload covers."""
    return pad(name, torch.ones_like(tensor, dtype=torch.bool), shape).bool()


def zero_beyond_rank(model: torch.nn.Module, layout: dict[str, int], ranks: dict[int, int]) -> None:
    """In place: zero the components beyond each layer's rank, so the model is a rank-r adapter there."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, layer in layout.items():
            rank = ranks.get(layer)
            factor = lora_factor(name)
            if rank is None or factor is None:
                continue
            if factor == "A":
                params[name][rank:] = 0
            else:
                params[name][:, rank:] = 0
