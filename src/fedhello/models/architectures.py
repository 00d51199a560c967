"""Model facts known without downloading weights: the architecture config of a model name, and the LoRA
parameter counts per layer and head of a config, computed on PyTorch's meta device (no weights, no memory).

A local folder (or the embedded MiniLM) is read from its `config.json`; hub names come from
`KNOWN_ARCHITECTURES`. LoRA is applied exactly as in a real run, so the counts -- and therefore upload
sizes -- are the real ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig

from fedhello.config import EMBEDDED_MODEL, RunConfig
from fedhello.errors import ConfigError
from fedhello.models.build import apply_lora, load_pretrained, resolve_model_path
from fedhello.models.layers import HEAD, num_blocks, trainable_layout

# Hub architectures the paper's configs use: (model_type, config overrides of the transformers defaults).
KNOWN_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "google/vit-base-patch16-224-in21k": ("vit", {}),
    "google/vit-base-patch16-224": ("vit", {}),
    "google/vit-large-patch16-224-in21k": (
        "vit",
        {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096},
    ),
    "facebook/deit-small-patch16-224": (
        "deit",
        {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536},
    ),
    "facebook/deit-base-patch16-224": ("deit", {}),
    "bert-base-uncased": ("bert", {}),
    "google-bert/bert-base-uncased": ("bert", {}),
    "roberta-base": ("roberta", {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1}),
    "gpt2": ("gpt2", {}),
    "openai-community/gpt2": ("gpt2", {}),
    "openai-community/gpt2-medium": ("gpt2", {"n_embd": 1024, "n_layer": 24, "n_head": 16}),
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T": (
        "llama",
        {
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 22,
            "num_attention_heads": 32,
            "num_key_value_heads": 4,
            "vocab_size": 32000,
        },
    ),
    "meta-llama/Llama-2-7b-hf": (
        "llama",
        {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32, "vocab_size": 32000},
    ),
}


@dataclass
class ModelShape:
    """LoRA parameter counts of a model, per transformer layer and for the head."""

    origin: str
    model_type: str
    num_layers: int
    layer_params: list[int]
    head_params: int


def architecture(name_or_path: str) -> tuple[PretrainedConfig, str]:
    """The architecture config of `model.name_or_path` and where it came from, without network access."""
    if name_or_path == EMBEDDED_MODEL or Path(name_or_path).is_dir():
        path = resolve_model_path(name_or_path)
        config = load_pretrained(AutoConfig.from_pretrained, path, "a model config", local_files_only=True)
        return config, f"config.json in {path}"
    if name_or_path in KNOWN_ARCHITECTURES:
        model_type, overrides = KNOWN_ARCHITECTURES[name_or_path]
        return AutoConfig.for_model(model_type, **overrides), "fedhello's table of known architectures"
    raise ConfigError(
        "model.name_or_path",
        f"'{name_or_path}' is neither a local folder nor a known architecture, so it cannot be sized offline",
        "download it to a folder and point name_or_path there",
    )


def lora_shape(config: RunConfig, auto_class: Any, num_labels: int | None) -> ModelShape:  # noqa: ANN401
    """Per-layer and head LoRA parameter counts of the configured model built by `auto_class` (a
    transformers `AutoModelFor...`) with `num_labels` classes (None: the architecture's default)."""
    arch, origin = architecture(config.model.name_or_path)
    if num_labels:
        arch.num_labels = num_labels
    with torch.device("meta"):
        base = auto_class.from_config(arch)
    model = apply_lora(base, config)
    params = dict(model.named_parameters())
    layers = num_blocks(arch)
    per_layer = [0] * layers
    head = 0
    for name, index in trainable_layout(params.items()).items():
        if index == HEAD:
            head += params[name].numel()
        else:
            per_layer[index] += params[name].numel()
    return ModelShape(origin, arch.model_type, layers, per_layer, head)
