"""Model facts known without downloading weights: the architecture config of a model name, and the LoRA
parameter counts per layer and head of a config, computed on PyTorch's meta device (no weights, no memory).

A local folder (or the embedded MiniLM) is read from its `config.json`; hub names come from
`KNOWN_ARCHITECTURES`. LoRA is applied exactly as in a real run, so the counts -- and therefore upload
sizes -- are the real ones. The same meta model gives `BaseWeights`: which linear layers bitsandbytes would
quantize (transformers' own skip rule) and what stays unquantized, for the analytic memory estimate
(`fedhello.resources.estimate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig

from fedhello.config import EMBEDDED_MODEL, RunConfig
from fedhello.errors import ConfigError
from fedhello.models.build import apply_lora, load_pretrained, resolve_model_path
from fedhello.models.layers import HEAD, layer_index, num_blocks, trainable_layout
from fedhello.paths import check_local, local_path

# Hub architectures the paper's configs use: (model_type, config overrides of the transformers defaults).
# `dtype` is the checkpoint's (its config.json `torch_dtype`); left out, the checkpoint is taken as fp32.
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
        {
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "vocab_size": 32000,
            "dtype": "float16",
        },
    ),
    # Llama 3.2 (gated on the hub): grouped-query attention, tied input/output embeddings, bf16 checkpoints.
    "meta-llama/Llama-3.2-1B": (
        "llama",
        {
            "hidden_size": 2048,
            "intermediate_size": 8192,
            "num_hidden_layers": 16,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 64,
            "vocab_size": 128256,
            "tie_word_embeddings": True,
            "dtype": "bfloat16",
        },
    ),
    "meta-llama/Llama-3.2-3B": (
        "llama",
        {
            "hidden_size": 3072,
            "intermediate_size": 8192,
            "num_hidden_layers": 28,
            "num_attention_heads": 24,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "vocab_size": 128256,
            "tie_word_embeddings": True,
            "dtype": "bfloat16",
        },
    ),
}

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}


@dataclass
class BaseWeights:
    """The frozen base model's tensors as a loader would place them, counted on the meta device.

    `quantized` lists (numel, out_features) of every linear layer bitsandbytes replaces (plain `nn.Linear`
    and GPT-2's `Conv1D`, minus transformers' skip list: `lora.head_modules` when given, else the output
    embeddings / tied weights / last module); `quantized_per_block[i]` the numel of block i's share.
    `other_params` are the parameters kept as they are (embeddings, norms, biases, the head, `lm_head`),
    `embedding_params` the part of them in the input and output embeddings (tied ones once), `buffer_bytes`
    the buffers, `checkpoint_bytes` bytes per parameter of the checkpoint's dtype."""

    quantized: list[tuple[int, int]]
    quantized_per_block: list[int]
    other_params: int
    buffer_bytes: int
    checkpoint_bytes: int
    embedding_params: int = 0


def checkpoint_bytes(arch: PretrainedConfig) -> int:
    """Bytes per parameter of the checkpoint: its config's `dtype` (`torch_dtype`), fp32 when unset."""
    dtype = getattr(arch, "dtype", None)
    return _DTYPE_BYTES.get(str(dtype).removeprefix("torch."), 4) if dtype is not None else 4


def base_weights(base: torch.nn.Module, arch: PretrainedConfig, skip_modules: list[str] | None) -> BaseWeights:
    """`BaseWeights` of a (meta) base model: the linear layers a bitsandbytes load with
    `llm_int8_skip_modules=skip_modules` quantizes, by transformers' own rule, and the rest."""
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.base import HfQuantizer
    from transformers.quantizers.quantizers_utils import should_convert_module

    keep = HfQuantizer.get_modules_to_not_convert(base, skip_modules, getattr(base, "_keep_in_fp32_modules", None))
    quantized: list[tuple[int, int]] = []
    per_block = [0] * num_blocks(arch)
    weight_ids: set[int] = set()
    for name, module in base.named_modules():
        if not (type(module) is torch.nn.Linear or isinstance(module, Conv1D)) or not should_convert_module(name, keep):
            continue
        weight = module.weight
        out_features = weight.shape[1] if isinstance(module, Conv1D) else weight.shape[0]
        quantized.append((weight.numel(), out_features))
        weight_ids.add(id(weight))
        index = layer_index(name)
        if index is not None and index < len(per_block):
            per_block[index] += weight.numel()
    other = sum(p.numel() for p in base.parameters() if id(p) not in weight_ids)  # tied weights listed once
    buffers = sum(b.numel() * b.element_size() for b in base.buffers())
    modules = (base.get_input_embeddings(), base.get_output_embeddings())
    tables = {id(m.weight): m.weight for m in modules if isinstance(getattr(m, "weight", None), torch.Tensor)}
    embedding = sum(w.numel() for key, w in tables.items() if key not in weight_ids)
    return BaseWeights(quantized, per_block, other, buffers, checkpoint_bytes(arch), embedding)


@dataclass
class ModelShape:
    """LoRA parameter counts of a model, per transformer layer and for the head; `lora_inputs[i]` is the
    sum of the input widths of layer i's LoRA-adapted modules, `lora_modules[i]` their number; `arch` the
    architecture config and `weights` the base model's tensors (for the memory estimate)."""

    origin: str
    model_type: str
    num_layers: int
    layer_params: list[int]
    head_params: int
    lora_inputs: list[int] = field(default_factory=list)
    lora_modules: list[int] = field(default_factory=list)
    arch: PretrainedConfig | None = None
    weights: BaseWeights | None = None


def architecture(name_or_path: str) -> tuple[PretrainedConfig, str]:
    """The architecture config of `model.name_or_path` and where it came from, without network access."""
    check_local("model.name_or_path", name_or_path, "model folder")  # a mistyped folder is "not found", at once
    if name_or_path == EMBEDDED_MODEL or local_path(name_or_path).is_dir():
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
    weights = base_weights(base, arch, list(config.lora.head_modules) or None)  # before LoRA wraps the linears
    model = apply_lora(base, config)
    params = dict(model.named_parameters())
    layers = num_blocks(arch)
    per_layer, inputs, modules = [0] * layers, [0] * layers, [0] * layers
    head = 0
    for name, index in trainable_layout(params.items()).items():
        if index == HEAD:
            head += params[name].numel()
        else:
            per_layer[index] += params[name].numel()
            if ".lora_A." in name:  # (r, in_features): one per adapted module
                inputs[index] += params[name].shape[-1]
                modules[index] += 1
    return ModelShape(origin, arch.model_type, layers, per_layer, head, inputs, modules, arch, weights)
