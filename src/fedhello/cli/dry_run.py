"""`fedhello run --dry-run`: the resolved plan of a run, computed without downloading anything.

Model sizes come from `fedhello.models.architectures` (the architecture only, on the meta device), the
number of classes from `fedhello.data.count_labels`, the tier assignment from the server's own rule.
"""

from __future__ import annotations

from fractions import Fraction

from fedhello.config import RunConfig
from fedhello.data import count_labels
from fedhello.models.architectures import ModelShape, lora_shape
from fedhello.server.federation import assign_tiers
from fedhello.tasks import TASKS


def model_shape(config: RunConfig) -> ModelShape:
    """Per-layer and head LoRA parameter counts of the configured model and task."""
    return lora_shape(config, TASKS.get(config.task).auto_model_class, count_labels(config.data))


def _mb(num_bytes: float) -> str:
    return f"{num_bytes / 1e6:.2f} MB"


def describe_plan(config: RunConfig) -> str:
    """A human-readable plan: model and LoRA sizes, clients, tiers, rounds, upload per round per tier."""
    shape = model_shape(config)
    config.check_tier_layers(shape.num_layers)
    fed, train, part = config.federation, config.train, config.partition
    tiers = assign_tiers(fed.num_clients, config.tiers, config.seed)
    bytes_per = 4  # LoRA factors and head are kept and sent in fp32
    per_layer = sum(shape.layer_params) / max(shape.num_layers, 1)
    all_params = sum(shape.layer_params) + shape.head_params
    labels = count_labels(config.data)
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
