"""ARD-LoRA's client side: learnable rank gates between every LoRA pair's A and B, trained with the factors under an
l1 sparsity and a total-variation term, folded into B and pruned before upload.

A LoRA module with planned rank r gets a gate vector g (r entries, one per rank component, starting at 1) applied
to the output of lora_A by a forward hook, so the module computes B diag(g) A x (times peft's scale): g_j is the
continuous weight of component j and sum(g) the module's continuous effective rank (the paper's r0 * alpha). The
gates are the client's own for one round: after training they are folded into B (B[:, j] <- g_j B[:, j], the same
update without the gates) and the components with g_j < `gate_threshold` are dropped, so the client sends the
effective-rank adapter it chose (at most its tier rank, at least 1 component). Dropped components need not be the
trailing ones, so the kept ones are compacted to the front: component j of one client's upload is not component j
of another's, and the server must merge products B_k A_k (SVD, `flexlora`), not factors entry by entry.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fedhello.models.ranks import lora_factor, partner_name
from fedhello.plan import Plan
from fedhello.training.hooks import ClientHook


def l1_term(gates: Sequence[torch.Tensor]) -> torch.Tensor:
    """The sparsity term: sum of |g| over every gate of every module (the total continuous effective rank)."""
    return torch.stack([g.abs().sum() for g in gates]).sum()


def tv_term(gates: Sequence[torch.Tensor], previous: Sequence[torch.Tensor]) -> torch.Tensor:
    """The total-variation term over training time: sum of |g - g_prev| with g_prev the gates at the previous
    optimizer step (constants). Summed over the steps of a round it is the gates' total variation along the
    trajectory; its gradient sign(g - g_prev) resists the last move, so ranks change steadily."""
    return torch.stack([(g - p.detach()).abs().sum() for g, p in zip(gates, previous, strict=True)]).sum()


def gated_output(output: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """lora_A's output (..., r_max) with its first len(gate) components scaled by `gate` (the others, beyond the
    client's rank, are zero components anyway and pass unchanged)."""
    rest = output.shape[-1] - gate.shape[0]
    full = torch.cat([gate, gate.new_ones(rest)]) if rest else gate
    return output * full.to(output.dtype)


def fold_and_prune(
    tensors: dict[str, torch.Tensor], gates: dict[str, torch.Tensor], threshold: float
) -> dict[str, tuple[int, int]]:
    """In place, for every LoRA pair (keyed by its A name) with gates g (the first len(g) components of
    full-rank factors): fold the gates into B (B[:, j] *= g_j), keep the components j < len(g) with g_j >=
    `threshold` (the one with the largest gate when none is), in their order, and replace A and B by those rows /
    columns (components beyond len(g) -- beyond the client's rank -- are dropped too). B_kept A_kept equals
    B diag(g) A minus the dropped components. Returns, per pair, (rank before, rank kept)."""
    out: dict[str, tuple[int, int]] = {}
    for a_name, gate in gates.items():
        b_name = partner_name(a_name)
        if a_name not in tensors or b_name not in tensors:
            continue
        g = gate.detach().to("cpu", tensors[b_name].dtype)
        rank = g.shape[0]
        b = tensors[b_name][:, :rank] * g
        keep = torch.nonzero(g >= threshold).flatten() if threshold > 0 else torch.arange(rank)
        if keep.numel() == 0:
            keep = g.argmax().reshape(1)
        tensors[b_name] = b[:, keep].contiguous()
        tensors[a_name] = tensors[a_name][:rank][keep].contiguous()
        out[a_name] = (rank, int(keep.numel()))
    return out


def _lora_module(model: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    """The peft LoRA module holding parameter `name` (`...query.lora_A.default.weight`) and its adapter name."""
    path, rest = name.split(".lora_A.", 1)
    return model.get_submodule(path), rest.split(".", 1)[0]


class ARDLoRAClient(ClientHook):
    """Installs the gates for a client's plan (`before_training`), optimises them with their own learning rate
    (`extra_param_groups`) under `l1` * l1_term + `tv` * tv_term (`loss_term`), removes the forward hooks
    (`after_training`) and folds / prunes the trained factors (`finish_update`). Options: `ARDLoRAOptions`."""

    def __init__(self, options, model: torch.nn.Module, layout: dict[str, int]) -> None:  # noqa: ANN001
        super().__init__(options, model, layout)
        self._gates: dict[str, torch.nn.Parameter] = {}  # A name -> this client's gates (until finish_update)
        self._previous: list[torch.Tensor] = []
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def before_training(self, plan: Plan) -> None:
        self._gates, self._previous = {}, []
        if not (plan.train_lora_a and plan.train_lora_b):
            return  # one frozen factor (FFA-LoRA-like plans): nothing to gate
        device = next(self.model.parameters()).device
        for name, layer in self.layout.items():
            if lora_factor(name) != "A" or layer not in plan.layers:
                continue
            module, adapter = _lora_module(self.model, name)
            r_max = int(module.r[adapter])
            rank = min(plan.ranks.get(layer, r_max), r_max) if plan.ranks else r_max
            gate = torch.nn.Parameter(torch.ones(rank, device=device, dtype=torch.float32))
            self._gates[name] = gate
            self._handles.append(
                module.lora_A[adapter].register_forward_hook(lambda _m, _i, out, g=gate: gated_output(out, g))
            )
        self._previous = [g.detach().clone() for g in self._gates.values()]

    def after_training(self, plan: Plan) -> None:
        for handle in self._handles:  # the shared model computes B A again, even when training failed
            handle.remove()
        self._handles = []

    def extra_param_groups(self) -> list[dict]:
        if not self._handles:
            return []
        return [{"params": list(self._gates.values()), "lr": self.options.gate_lr, "weight_decay": 0.0}]

    def loss_term(self) -> torch.Tensor | None:
        if not self._handles:
            return None
        gates = list(self._gates.values())
        term = self.options.l1 * l1_term(gates) + self.options.tv * tv_term(gates, self._previous)
        self._previous = [g.detach().clone() for g in gates]
        return term

    def finish_update(self, plan: Plan, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
        """Fold the gates into B and drop sub-threshold components, in place; the metrics: mean gate, mean rank
        sent per LoRA pair, components dropped."""
        gates, self._gates, self._previous = self._gates, {}, []
        if not gates:
            return {}
        mean_gate = float(torch.cat([g.detach().cpu() for g in gates.values()]).mean())
        ranks = fold_and_prune(tensors, gates, self.options.gate_threshold)
        return {
            "mean_gate": mean_gate,
            "mean_rank": sum(kept for _, kept in ranks.values()) / len(ranks),
            "pruned_components": float(sum(rank - kept for rank, kept in ranks.values())),
        }
