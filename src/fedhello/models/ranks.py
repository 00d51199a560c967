"""Rank heterogeneity on one shared rank-`r_max` adapter.

A client of rank r uses the first r components of every LoRA pair: rows `[:r]` of `lora_A` (shape r_max x in)
and columns `[:, :r]` of `lora_B` (shape out x r_max). Zeroing the other components makes the client's
forward pass exactly that of a rank-r adapter, and they stay zero while training: their gradients are
products with the zeroed partner (dL/dB[:, j] is proportional to A[j], dL/dA[j] to B[:, j]), and AdamW moves
neither a zero-gradient nor a zero-valued entry. The client uploads the truncated factors, so rank
heterogeneity saves real bytes. The server zero-pads them back to r_max.

Scale: peft multiplies every module's B A by alpha / r_max. With `lora.rank_scaling: fixed` (default) a
rank-r client keeps that scale, so it is a rank-r adapter with scale alpha / r_max. With `per_rank`
(`PerRankScaling`) it is a rank-r adapter with scale alpha / r, as in HetLoRA; the factors it uploads are
converted back to the server's alpha / r_max convention, so aggregation never mixes scales.
"""

from __future__ import annotations

import math
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


def _module_and_adapter(model: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    """The peft LoRA module holding parameter `name` (`...query.lora_B.default.weight`) and its adapter."""
    marker = ".lora_B." if ".lora_B." in name else ".lora_A."
    path, rest = name.split(marker, 1)
    return model.get_submodule(path), rest.split(".", 1)[0]


class PerRankScaling:
    """`lora.rank_scaling: per_rank`: a client of rank r trains as a rank-r adapter with scale alpha / r.

    peft scales every module by alpha / r_max, and the server keeps storing factors in that convention, so
    that every client's upload means the same update (alpha / r_max) B A and the aggregators need no
    per-client scales. On `enter`, each LoRA module of a layer with planned rank r gets scale alpha / r and
    its B factor is multiplied by r / r_max: the forward pass is unchanged (the client starts from the global
    model) and the module is exactly a rank-r adapter with scale alpha / r, factors (B r / r_max, A). Training
    then moves it as such an adapter moves (AdamW steps are about lr per entry whatever the scale, so a
    rank-r client's update is r_max / r times larger in server units than under the fixed scale). `exit`
    multiplies B by r_max / r again and restores peft's scale, so the uploaded factors are in server units.
    """

    def __init__(self, model: torch.nn.Module, layout: dict[str, int], ranks: dict[int, int]) -> None:
        self.params = dict(model.named_parameters())
        # B factor name -> (module, adapter, factor r / r_max); modules whose planned rank is r_max keep theirs
        self.modules: dict[str, tuple[torch.nn.Module, str, float]] = {}
        for name, layer in layout.items():
            rank = ranks.get(layer)
            if lora_factor(name) != "B" or rank is None:
                continue
            module, adapter = _module_and_adapter(model, name)
            r_max = int(module.r[adapter])
            if rank < r_max:
                self.modules[name] = (module, adapter, rank / r_max)
        self._saved: dict[str, float] = {}

    def enter(self) -> None:
        with torch.no_grad():
            for name, (module, adapter, ratio) in self.modules.items():
                self._saved[name] = module.scaling[adapter]
                module.scaling[adapter] = self._saved[name] / ratio  # alpha / r_max -> alpha / r
                self.params[name].mul_(ratio)

    def exit(self) -> None:
        with torch.no_grad():
            for name, (module, adapter, ratio) in self.modules.items():
                if name in self._saved:
                    module.scaling[adapter] = self._saved.pop(name)
                    self.params[name].div_(ratio)


def self_prune(
    tensors: dict[str, torch.Tensor], ranks: dict[str, int], threshold: float, keep_ratio: float
) -> dict[str, int]:
    """HetLoRA's local rank self-pruning, deterministic: for every LoRA pair in `tensors` (full r_max-shaped
    factors) whose client rank is r (`ranks[A name]`), keep k = floor(keep_ratio r) components (at least 1, at
    most r - 1) and drop components k..r-1 of A and B when ||B[:, k:r] A[k:r]||_F is below `threshold` times
    ||B[:, :k] A[:k]||_F -- the dropped components carry little of the update. A pruned pair is replaced in
    `tensors` (the dict is changed in place) by its first k components: the client sends a rank-k adapter, as
    in HetLoRA, so a rank-aware aggregator sees a rank-k upload (`rank_fedavg` averages components k.. over the
    clients that sent them, `hetlora` zero-pads). Returns the rank each pair now has (keyed by its A name).
    Pairs with one factor missing (FFA-LoRA) are left alone."""
    kept: dict[str, int] = {}
    for a_name, rank in ranks.items():
        b_name = partner_name(a_name)
        if a_name not in tensors or b_name not in tensors:
            continue
        kept[a_name] = rank
        k = min(rank - 1, max(1, math.floor(keep_ratio * rank)))
        if rank < 2:
            continue
        a, b = tensors[a_name].double(), tensors[b_name].double()
        tail = torch.linalg.matrix_norm(b[:, k:rank] @ a[k:rank])
        head = torch.linalg.matrix_norm(b[:, :k] @ a[:k])
        if tail < threshold * head:
            tensors[a_name] = truncate(a_name, tensors[a_name], k)
            tensors[b_name] = truncate(b_name, tensors[b_name], k)
            kept[a_name] = k
    return kept
