"""Map trainable parameter names to transformer block indices, for any supported architecture.

Block indices are matched as a whole dotted path component (`.layer.1.`), never as a substring: the
official Fed-HeLLo code matched `'1' in name`, so freezing layer 1 also froze layers 10 and 11.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch

# BERT/RoBERTa/ViT/DeiT: encoder.layer.N; GPT-2: transformer.h.N; LLaMA/Mistral: model.layers.N;
# T5/others: block.N / blocks.N.
_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)(?:\.|$)")

HEAD = -1  # pseudo layer index of the task head in a layout


def layer_index(param_name: str) -> int | None:
    """Transformer block index of a parameter, or None when it is not inside a block (e.g. the head)."""
    match = _BLOCK.search(param_name)
    return int(match.group(1)) if match else None


def num_blocks(config: object) -> int:
    """Number of transformer blocks from a `transformers` config of any family."""
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    raise ValueError(f"cannot tell the number of transformer layers of {type(config).__name__}")


def model_depth(model: torch.nn.Module) -> int:
    """Number of transformer blocks of a (LoRA-wrapped) model."""
    return num_blocks(model.config if hasattr(model, "config") else model.base_model.config)


def trainable_layout(named_params: Iterable[tuple[str, torch.nn.Parameter]]) -> dict[str, int]:
    """Every federated parameter name -> its block index (HEAD for the task head).

    Federated parameters are the LoRA factors (inside blocks) and the head's trainable copy
    (`modules_to_save`). Everything else in the model is frozen base weight.
    """
    layout: dict[str, int] = {}
    for name, _ in named_params:
        if "lora_" in name:
            index = layer_index(name)
            if index is None:
                raise ValueError(f"LoRA parameter '{name}' is outside any transformer block")
            layout[name] = index
        elif "modules_to_save" in name:
            layout[name] = HEAD
    return layout


def keys_for_layers(layout: dict[str, int], layers: Iterable[int], head: bool) -> list[str]:
    """Parameter names trained by a client that trains `layers` (and the head when `head`)."""
    wanted = set(layers)
    if head:
        wanted.add(HEAD)
    return [name for name, index in layout.items() if index in wanted]
