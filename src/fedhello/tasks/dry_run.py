"""The resolved plan of a run, computed without downloading anything (`fedhello run --dry-run`).

The model is built from its *configuration only*, on PyTorch's meta device (no weights, no memory):
from the folder's `config.json` for a local model, or from a table of known hub architectures. LoRA is
applied exactly as in a real run, so per-layer and head parameter counts, and therefore upload sizes, are
the real ones. Nothing here touches the network.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig

from fedhello.config import EMBEDDED_MODEL, RunConfig
from fedhello.errors import ConfigError
from fedhello.models.layers import HEAD, num_blocks, trainable_layout
from fedhello.server.federation import assign_tiers
from fedhello.tasks.base import TASKS

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
# Classes of the built-in sources (None: the task has no classification head).
SOURCE_LABELS: dict[str, int | None] = {"bbc_news": 5}


@dataclass
class ModelShape:
    """LoRA parameter counts of a model, per transformer layer and for the head."""

    origin: str
    model_type: str
    num_layers: int
    layer_params: list[int]
    head_params: int


def model_config(name_or_path: str) -> tuple[PretrainedConfig, str]:
    """The architecture config and where it came from, without network access."""
    if name_or_path == EMBEDDED_MODEL or Path(name_or_path).is_dir():
        from fedhello.models.build import load_pretrained, resolve_model_path

        path = resolve_model_path(name_or_path)
        config = load_pretrained(AutoConfig.from_pretrained, path, "a model config", local_files_only=True)
        return config, f"config.json in {path}"
    if name_or_path in KNOWN_ARCHITECTURES:
        model_type, overrides = KNOWN_ARCHITECTURES[name_or_path]
        return AutoConfig.for_model(model_type, **overrides), "fedhello's table of known architectures"
    raise ConfigError(
        "model.name_or_path",
        f"'{name_or_path}' is neither a local folder nor a known architecture, so the dry run cannot size it",
        "download it to a folder and point name_or_path there",
    )


def num_labels(config: RunConfig) -> int | None:
    """Number of classes, from the source table or a local saved data set (never a download)."""
    from fedhello.data.paper import NUM_LABELS

    table = {**SOURCE_LABELS, **NUM_LABELS}
    data = config.data
    if data.path and Path(data.path).is_dir() and data.source not in ("folders", "domainnet"):
        try:
            from datasets import DatasetDict, load_from_disk

            loaded = load_from_disk(data.path)
            features = (loaded["train"] if isinstance(loaded, DatasetDict) else loaded).features
            names = getattr(features.get(data.label_column), "names", None)
            if names:
                return len(names)
        except (FileNotFoundError, KeyError, ValueError):
            pass
    return table.get(data.source)


def model_shape(config: RunConfig) -> ModelShape:
    """Per-layer and head LoRA parameter counts of the configured model, built on the meta device."""
    from fedhello.models.build import apply_lora

    arch, origin = model_config(config.model.name_or_path)
    task_class = TASKS.get(config.task) if config.task in TASKS else None
    if task_class is None:
        raise ConfigError("task", f"unknown task '{config.task}'", f"use one of {TASKS.names()}")
    auto = getattr(task_class, "auto_model_class", AutoModelForSequenceClassification)
    labels = num_labels(config)
    if labels:
        arch.num_labels = labels
    with torch.device("meta"):
        base = auto.from_config(arch)
    model = apply_lora(base, config)
    params = dict(model.named_parameters())
    layout = trainable_layout(params.items())
    layers = num_blocks(arch)
    per_layer = [0] * layers
    head = 0
    for name, index in layout.items():
        if index == HEAD:
            head += params[name].numel()
        else:
            per_layer[index] += params[name].numel()
    return ModelShape(origin, arch.model_type, layers, per_layer, head)


def _mb(num_bytes: float) -> str:
    return f"{num_bytes / 1e6:.2f} MB"


def describe_plan(config: RunConfig) -> str:
    """A human-readable plan: model and LoRA sizes, clients, tiers, rounds, upload per round per tier."""
    shape = model_shape(config)
    for i, tier in enumerate(config.tiers):
        if tier.layers is not None and tier.layers > shape.num_layers:
            raise ConfigError(
                f"tiers.{i}.layers",
                f"{tier.layers} is more than the model's {shape.num_layers} layers",
                f"use at most {shape.num_layers}",
            )
    fed, train, part = config.federation, config.train, config.partition
    tiers = assign_tiers(fed.num_clients, config.tiers, config.seed)
    bytes_per = 4  # LoRA factors and head are kept and sent in fp32
    per_layer = sum(shape.layer_params) / max(shape.num_layers, 1)
    all_params = sum(shape.layer_params) + shape.head_params
    labels = num_labels(config)
    lines = [
        "plan (computed without downloading anything):",
        f"  model: {config.model.name_or_path} ({shape.model_type}, {shape.num_layers} layers; from {shape.origin})",
        f"  LoRA r={config.lora.r} on {', '.join(config.lora.target_modules)}: {per_layer:,.0f} parameters per "
        f"layer, head {shape.head_params:,} ({', '.join(config.lora.head_modules) or 'none'})",
        f"  data: {config.data.source} ({config.data.path or 'built-in or hub default'}), "
        f"{labels if labels else 'no or unknown (head sized for 2)'} classes; partition {part.kind}",
        f"  clients: {fed.num_clients}, {fed.clients_per_round} per round, {fed.rounds} rounds, "
        f"evaluate every {fed.eval_every}",
        f"  training: {train.local_epochs} local epoch(s), batch {train.batch_size} x {train.grad_accum} accumulated = "
        f"{train.batch_size * train.grad_accum} per step, lr {train.lr}, device {train.device}, {train.precision}"
        + (", gradient checkpointing" if train.gradient_checkpointing else ""),
        f"  strategy: {config.strategy.name} (pattern {config.strategy.pattern}), "
        f"aggregation {config.aggregation.name}",
        "  tier  share  layers  clients  expected/round  upload/client  upload/round (expected)",
    ]
    total = 0.0
    for i, tier in enumerate(config.tiers):
        members = tiers.count(i)
        expected = fed.clients_per_round * members / fed.num_clients
        k = tier.layers or shape.num_layers  # a budget-only tier: the profile decides at run time, at most all
        upload = (k * per_layer + shape.head_params) * bytes_per
        total += expected * upload
        share = str(Fraction(tier.share).limit_denominator(100))
        lines.append(
            f"  {i:<4}  {share:<5}  {k:>2}/{shape.num_layers:<3}  {members:>7}  {expected:>14.1f}  "
            f"{_mb(upload):>13}  {_mb(expected * upload):>12}"
        )
    lines.append(
        f"  estimated upload per round {_mb(total)}, {_mb(total * fed.rounds)} over the run; "
        f"download per client {_mb(all_params * bytes_per)}"
    )
    return "\n".join(lines)
