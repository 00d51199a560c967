"""`fedhello run --dry-run`: the resolved plan of a run, computed without downloading anything.

Model sizes come from `fedhello.models.architectures` (the architecture only, on the meta device), the
number of classes from the data when they are local (read as the run reads them), else from
`fedhello.data.count_labels`, the tier assignment from the server's own rule, and
each tier's predicted memory from the analytic estimate `fedhello.resources.estimate`.
"""

from __future__ import annotations

from fractions import Fraction

from datasets import DatasetDict

from fedhello.config import RunConfig, StrategyConfig
from fedhello.data import check_path, count_labels
from fedhello.data.sources import class_names, load_source
from fedhello.errors import FedHelloError
from fedhello.models.architectures import ModelShape
from fedhello.models.quantize import QUANTIZATIONS
from fedhello.paths import check_local, local_path
from fedhello.resources.estimate import Candidate, TierPrediction, dimensions, model_shape, predict_tiers
from fedhello.server.federation import assign_tiers


def strategy_options(config: RunConfig) -> str:
    """The strategy's own options, `key value` (those every strategy has left out), or 'no options'."""
    common = set(StrategyConfig.model_fields)
    own = {k: v for k, v in config.strategy.model_dump(mode="json").items() if k not in common}
    return ", ".join(f"{k} {v}" for k, v in own.items()) or "no options"


def read_local_data(config: RunConfig) -> DatasetDict | None:
    """The run's data when `data.path` is on this machine, read as the run reads it (its source: columns, labels,
    splits), so that a wrong column or an unreadable file fails the dry run in the run's one line, not the run
    after its folder exists. None for hub or built-in data (nothing is downloaded) and for data the SuperNodes
    hold (`flower.node_data`)."""
    if not config.data.path or config.flower.node_data or not local_path(config.data.path).exists():
        return None
    return load_source(config.data, config.seed)


def _mb(num_bytes: float) -> str:
    return f"{num_bytes / 1e6:.2f} MB"


def describe_plan(config: RunConfig) -> str:
    """A human-readable plan: model and LoRA sizes, clients, tiers, rounds, upload per round per tier."""
    check_path(config.data)  # a data.path the source would ignore fails here as it would in the run
    if config.data.path:
        check_local("data.path", config.data.path, "data file or folder")  # a mistyped local path, at once
    splits = read_local_data(config)
    shape = model_shape(config)
    config.check_tier_layers(shape.num_layers)
    fed, train, part = config.federation, config.train, config.partition
    tiers = assign_tiers(fed.num_clients, config.tiers, config.seed)
    bytes_per = 4  # LoRA factors and head are kept and sent in fp32
    per_layer = sum(shape.layer_params) / max(shape.num_layers, 1)
    all_params = sum(shape.layer_params) + shape.head_params
    labels = (splits and len(class_names(splits["train"], config.data.label_column))) or count_labels(config.data)
    rows = f", {', '.join(f'{len(split)} {name}' for name, split in splits.items())} rows read" if splits else ""
    lines = [
        "plan (computed without downloading anything):",
        f"  model: {config.model.name_or_path} ({shape.model_type}, {shape.num_layers} layers; from {shape.origin})",
        f"  LoRA r={config.lora.r} on {', '.join(config.lora.target_modules)}: {per_layer:,.0f} parameters per "
        f"layer, head {shape.head_params:,} ({', '.join(config.lora.head_modules) or 'none'})",
        f"  data: {config.data.source} ({config.data.path or 'built-in or hub default'}), "
        f"{labels if labels else 'no or unknown (head sized for 2)'} classes{rows}; partition {part.kind}",
        f"  clients: {fed.num_clients}, {fed.clients_per_round} per round, {fed.rounds} rounds, "
        f"evaluate every {fed.eval_every}",
        f"  training: {train.local_epochs} local epoch(s), batch {train.batch_size} x {train.grad_accum} accumulated = "
        f"{train.batch_size * train.grad_accum} per step, lr {train.lr}, device {train.device}, {train.precision}"
        + (", gradient checkpointing" if train.gradient_checkpointing else ""),
        f"  strategy: {config.strategy.name} ({strategy_options(config)}), aggregation {config.aggregation.name}",
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
        at_most = "<=" if tier.has_budget else ""  # the budget may afford fewer layers (budget plans below)
        lines.append(
            f"  {i:<4}  {share:<5}  {at_most + str(k):>4}/{shape.num_layers:<3}  {members:>5}  {expected:>14.1f}  "
            f"{_mb(upload):>13}  {_mb(expected * upload):>12}"
        )
    lines.append(
        f"  estimated upload per round {_mb(total)}, {_mb(total * fed.rounds)} over the run; "
        f"download per client {_mb(all_params * bytes_per)}"
    )
    try:
        lines.extend(describe_memory(config, shape))
    except (AttributeError, TypeError, ValueError) as err:  # an architecture the estimate cannot read
        lines.append(f"  predicted memory: not available for {shape.model_type} ({type(err).__name__}: {err})")
    lines.extend(describe_budget_plans(config, shape.num_layers))
    return "\n".join(lines)


def describe_budget_plans(config: RunConfig, num_layers: int) -> list[str]:
    """The plans each budget tier admits, from the measured profile the run will convert its budgets with (when
    it is cached); the analytic table above is an estimate, this is what the run will do."""
    if not any(t.has_budget for t in config.tiers):
        return []
    from fedhello.resources.budgets import planned_constraints
    from fedhello.resources.cost import BudgetError
    from fedhello.resources.report import plan_lines

    try:
        constraints = planned_constraints(config, num_layers)
    except (BudgetError, FedHelloError) as err:
        return [f"  budget plans (measured profile): {err}"]
    if constraints is None:
        return [
            "  budget plans: no measured profile cached for this config yet (`fedhello profile CONFIG` measures it;",
            "  so does the run, before its first round)",
        ]
    lines = [
        f"  budget plans (measured profile, the cost model the run will use; recompute "
        f"{'allowed' if config.strategy.recompute else 'off'}):"
    ]
    for i, constraint in enumerate(constraints):
        if constraint is not None:
            lines.append(f"  tier {i}:")
            lines += ["  " + line for line in plan_lines(constraint, num_layers)]
    return lines


def _mib(value: float) -> str:
    return f"{value:,.0f}"


def _budget(candidate: Candidate, prediction: TierPrediction) -> str:
    tier = prediction.tier
    parts = [f"memory_mb {tier.memory_mb:,.0f}"] if tier.memory_mb is not None else []
    if tier.total_memory_mb is not None:
        parts.append(f"total_memory_mb {tier.total_memory_mb:,.0f}")
    if tier.memory_fraction is not None and tier.memory_mb is None:
        parts.append(f"memory_fraction {tier.memory_fraction:g} of all layers' training memory")
    if tier.seconds_per_step is not None:
        parts.append(f"seconds_per_step {tier.seconds_per_step:g}")
    if not parts:
        return "-"
    if tier.memory_mb is None and tier.total_memory_mb is None:
        return f"{', '.join(parts)}: converted with the profile measured at run time (budget plans below)"
    if candidate.layers is None:
        return f"{', '.join(parts)}: does not fit (the top layer alone needs ~{_mib(candidate.need_mb)} MiB training)"
    return f"{', '.join(parts)}: " + ("fits" if candidate.fits else "over at the deepest plan")


def _row(label: str, quant: str, candidate: Candidate, prediction: TierPrediction) -> str:
    n = candidate.estimate.num_layers
    weights, budget = _mib(candidate.estimate.weights_mb), _budget(candidate, prediction)
    if candidate.layers is None:
        return f"  {label:<4}  {quant:<5}  {'-':>5}  {weights:>7}  {'-':>26}  {'-':>23}  {budget}"
    training = f"{_mib(candidate.training_mb(False))} / {_mib(candidate.training_mb(True))}"
    total = f"{_mib(candidate.total_mb(False))} / {_mib(candidate.total_mb(True))}"
    layers = f"{candidate.layers}/{n}"
    return f"  {label:<4}  {quant:<5}  {layers:>5}  {weights:>7}  {training:>26}  {total:>23}  {budget}"


def describe_memory(config: RunConfig, shape: ModelShape) -> list[str]:
    """Per tier: quantization, layers, predicted weights / training / total MiB (analytic, offline)."""
    predictions = predict_tiers(shape, config)
    dims = dimensions(shape, config)
    where = "GPU (fused attention)" if dims.gpu else "CPU (materialised attention scores)"
    if config.train.device == "auto":
        where += ", assumed for device auto"
    lines = [
        f"  predicted memory per client, MiB (analytic estimate, docs/benchmarks.md): {config.train.precision}, "
        f"{dims.batch} x {dims.seq} tokens"
        + (", gradient checkpointing" if config.train.gradient_checkpointing else "")
        + f", {where}",
        f"  tier  quant  {'layers':>5}  {'weights':>7}  {'training top-k / deepest':>26}  "
        f"{'total top-k / deepest':>23}  budget",
    ]
    notes = []
    used: dict[str, Candidate] = {}
    for p in predictions:
        if not p.candidates:
            lines.append(_row(str(p.index), p.chosen.estimate.quantization, p.chosen, p))
            used.setdefault(p.chosen.estimate.quantization, p.chosen)
            continue
        for c in p.candidates:
            q = c.estimate.quantization
            mark = ">" if c is p.chosen else " "
            lines.append(_row(str(p.index) if c is p.candidates[0] else "", f"{mark}{q}", c, p))
            used.setdefault(q, c)
        notes.append(f"  tier {p.index} quantization auto -> {p.chosen.estimate.quantization}: {p.reason}")
    lines.extend(notes)
    for q, c in sorted(used.items(), key=lambda item: QUANTIZATIONS.index(item[0])):
        m = c.estimate.training
        formula = f"{m.base:,.0f} + {m.per_depth:,.1f}*depth + {m.per_layer:,.2f}*layers MiB"
        lines.append(f"  training cost model {q}: {formula}")
    lines += [
        "  weights: the base model at the tier's quantization; training: activations, LoRA gradients and AdamW,",
        "  logits; top-k: the k top layers; deepest: k layers down to layer 0 (to the budget's floor with",
        "  strategy.depth_aware). Not counted: the CUDA context (~0.3-0.6 GiB per process) and fragmentation.",
        "  An estimate: budget tiers are converted with the profile measured at run time (fedhello profile).",
    ]
    return lines
