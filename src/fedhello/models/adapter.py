"""The federated adapter state of a model: copy it in and out, and make exactly a plan's part trainable."""

from __future__ import annotations

import torch

from fedhello.models.layers import keys_for_layers
from fedhello.models.ranks import lora_factor
from fedhello.plan import Plan


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the model's parameters in place (no re-allocation). Shapes must match exactly:
    `copy_` would otherwise broadcast, e.g. a rank-1 factor into every row of a rank-8 one."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            if tuple(value.shape) != tuple(params[name].shape):
                raise ValueError(f"{name}: state has shape {list(value.shape)}, the model {list(params[name].shape)}")
            params[name].copy_(value)


def extract_state(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """CPU copies of the named parameters."""
    params = dict(model.named_parameters())
    return {name: params[name].detach().to("cpu", copy=True) for name in names}


def freeze_for_plan(model: torch.nn.Module, layout: dict[str, int], plan: Plan) -> list[str]:
    """Make exactly the plan's parameters trainable; return their names."""
    trained = set(keys_for_layers(layout, plan.layers, plan.train_head))
    frozen_factors = {f for f, train in (("A", plan.train_lora_a), ("B", plan.train_lora_b)) if not train}
    if frozen_factors:  # e.g. FFA-LoRA: A stays at its shared init and is never sent
        trained = {name for name in trained if lora_factor(name) not in frozen_factors}
    for name, param in model.named_parameters():
        param.requires_grad_(name in trained)
    return [name for name in layout if name in trained]
