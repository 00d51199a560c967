"""Activation recomputation per transformer block, switched per client and per round.

A block whose `gradient_checkpointing` flag is set keeps only its input for backward and runs its forward
again there (non-reentrant `torch.utils.checkpoint`): its activations stop counting toward the peak, at the
price of one more forward of the block. With real freezing only the blocks from the lowest trained layer up
keep activations, so recomputing `r` of them (`Plan.recompute`) trades about one block's activations for one
block's forward each (measured: docs/method.md).

We set the flags on transformers' `GradientCheckpointingLayer` blocks ourselves rather than calling
`gradient_checkpointing_enable`: that call also makes the embedding output require grad (so that reentrant
checkpointing can reach LoRA weights), which sends backward through every block below the lowest trained layer
and undoes what freezing saves. Non-reentrant checkpointing needs no such hook.
"""

from __future__ import annotations

import functools

import torch
from torch.utils.checkpoint import checkpoint
from transformers.modeling_layers import GradientCheckpointingLayer

from fedhello.models.layers import layer_index

_CHECKPOINT = functools.partial(checkpoint, use_reentrant=False)


def block_modules(model: torch.nn.Module) -> dict[int, torch.nn.Module]:
    """Transformer block index -> the block module that can recompute its activations (empty when the
    architecture has no `GradientCheckpointingLayer` blocks)."""
    cached = getattr(model, "_fedhello_blocks", None)
    if cached is None:
        cached = {}
        for name, module in model.named_modules():
            if isinstance(module, GradientCheckpointingLayer):
                index = layer_index(name + ".")
                if index is not None and index not in cached:
                    cached[index] = module
        model._fedhello_blocks = cached  # noqa: SLF001 - found once per model
    return cached


def recomputed_blocks(layers: tuple[int, ...], recompute: int, num_layers: int) -> range:
    """The blocks a plan recomputes: the `recompute` lowest of those backward traverses (from the lowest trained
    layer up). Recomputing the top block too saves nothing: its activations are rebuilt while backward runs."""
    if not layers or recompute <= 0:
        return range(0)
    lowest = min(layers)
    return range(lowest, min(lowest + recompute, num_layers))


def set_recompute(model: torch.nn.Module, blocks: range | set[int] | tuple[int, ...]) -> None:
    """Recompute the activations of exactly `blocks` (block indices) in the next forward/backward passes."""
    modules = block_modules(model)
    wanted = set(blocks)
    missing = wanted - set(modules)
    if missing:
        raise ValueError(
            f"{type(model).__name__} cannot recompute blocks {sorted(missing)} (no gradient-checkpointing layers); "
            "fix: set strategy.recompute and train.gradient_checkpointing to false"
        )
    for index, module in modules.items():
        module._gradient_checkpointing_func = _CHECKPOINT  # noqa: SLF001 - transformers' documented hook
        module.gradient_checkpointing = index in wanted


def supports_recompute(model: torch.nn.Module) -> bool:
    """Whether the model's blocks can recompute their activations one by one."""
    return bool(block_modules(model))
