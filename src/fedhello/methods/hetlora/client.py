"""HetLoRA's client side: a rank-r client trains as a rank-r adapter scaled alpha / r (`PerRankScaling`), and
after training prunes the components of a LoRA pair that carry little of its update (`self_prune`)."""

from __future__ import annotations

import math

import torch

from fedhello.models.ranks import lora_factor, partner_name, truncate
from fedhello.plan import Plan
from fedhello.training.hooks import ClientHook


def _module_and_adapter(model: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    """The peft LoRA module holding parameter `name` (`...query.lora_B.default.weight`) and its adapter."""
    marker = ".lora_B." if ".lora_B." in name else ".lora_A."
    path, rest = name.split(marker, 1)
    return model.get_submodule(path), rest.split(".", 1)[0]


class PerRankScaling:
    """`rank_scaling: per_rank`: a client of rank r trains as a rank-r adapter with scale alpha / r.

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


class HetLoRAClient(ClientHook):
    """`rank_scaling: per_rank` rescales the shared model for a rank-r plan around training; `self_prune_threshold`
    > 0 prunes the trained factors before they are sent (the options are `HetLoRAOptions`)."""

    def __init__(self, options, model: torch.nn.Module, layout: dict[str, int]) -> None:  # noqa: ANN001
        super().__init__(options, model, layout)
        self._scaling: PerRankScaling | None = None

    def before_training(self, plan: Plan) -> None:
        if plan.ranks and self.options.rank_scaling == "per_rank":
            self._scaling = PerRankScaling(self.model, self.layout, plan.ranks)
            self._scaling.enter()

    def after_training(self, plan: Plan) -> None:
        if self._scaling is not None:  # the shared model gets peft's scale back, even when training failed
            self._scaling.exit()
            self._scaling = None

    def finish_update(self, plan: Plan, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
        """Self-pruning on the trained factors, in place. A pruned pair is uploaded as the rank-k adapter it is (the
        server's validation accepts a pair below the plan's rank when clients self-prune); the metrics say how
        many LoRA pairs dropped components and the mean rank actually sent."""
        if self.options.self_prune_threshold <= 0:
            return {}
        ranks = {}
        for name, tensor in tensors.items():
            if lora_factor(name) == "A":
                planned = plan.ranks.get(self.layout[name]) if plan.ranks else None
                ranks[name] = min(planned or tensor.shape[0], tensor.shape[0])
        kept = self_prune(tensors, ranks, self.options.self_prune_threshold, self.options.self_prune_ratio)
        if not kept:
            return {}
        return {
            "pruned_pairs": float(sum(kept[n] < ranks[n] for n in kept)),
            "mean_rank": sum(kept.values()) / len(kept),
        }
