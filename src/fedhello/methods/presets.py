"""A method is a named preset: which allocator decides the plans, which aggregator merges the updates,
and any option they need, written as config overrides. Everything else (task, partition, tiers, seeds,
budgets) comes from the experiment config, so all methods of a comparison share it.

Adding a method: write its allocator / aggregator (registered by name) and add one `Method` here.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedhello.config import RunConfig, config_from_dict, set_dotted
from fedhello.registry import Registry


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted config paths -> values
    # a change that depends on the experiment (e.g. the centralized reference's step count), applied to the
    # raw config tree after `overrides`; it receives the experiment's resolved config to read from
    adjust: Callable[[dict[str, Any], RunConfig], None] | None = None
    # its run does not depend on the grid's partition (it sets its own): a grid runs it once per seed
    partition_free: bool = False


CENTRALIZED_LR_FACTOR = 0.5


def _centralized(tree: dict[str, Any], config: RunConfig) -> None:
    """One client holding all training data (an IID partition of one), trained with the optimizer steps of a
    whole federated round per round: the yardstick "converged" is measured against. Same rounds and schedule,
    half the learning rate (below); `clients_per_round x max_steps` steps per round (with epochs instead of a
    step cap, the union of the clients' data is one client's, so the same epochs are the same number of
    samples)."""
    counts = [t.layers for t in config.tiers if t.layers]
    if not counts:
        from fedhello.errors import ConfigError

        raise ConfigError("tiers", "the centralized reference needs a tier with layers", "add {share: ..., layers: L}")
    sampled = min(config.federation.clients_per_round, config.federation.num_clients)
    set_dotted(tree, "federation.num_clients", 1)
    set_dotted(tree, "federation.clients_per_round", 1)
    tree["partition"] = {"kind": "iid"}
    tree["tiers"] = [{"share": 1, "layers": max(counts)}]
    if config.train.max_steps:
        steps = sampled * config.train.max_steps
        set_dotted(tree, "train.max_steps", steps)
        set_dotted(tree, "train.local_epochs", max(config.train.local_epochs, steps))  # the step cap decides
    # one model taking a whole round's steps in a row diverges at the federated rate (measured on the bench,
    # 12 rounds x 54 steps at 0.01: 83.6 / 89.0 / 87.9 %; at 0.005: 95.3 %); a yardstick must be well trained
    set_dotted(tree, "train.lr", config.train.lr * CENTRALIZED_LR_FACTOR)


METHODS: Registry[Method] = Registry("method", "--method")


# HetLoRA's self-pruning: drop the top quarter of a client's components (lora.self_prune_ratio 0.75) when their
# update is under a tenth of the rest's. The paper gives the rule, not values for this scale; these are ours.
HETLORA_PRUNE_THRESHOLD = 0.1


def _strategy(name: str, **options: Any) -> dict[str, Any]:
    """The strategy overrides of a preset. Whether plans are fitted to budgets and may recompute activations is
    part of what a method is, so every preset says so (off unless given): a base config that turns them on
    (e.g. the default's budget-true `fill-rc`) does not turn `fill` into `fill-rc`."""
    options = {"depth_aware": False, "recompute": False, **options}
    return {"strategy.name": name, **{f"strategy.{k}": v for k, v in options.items()}}


for _method in [
    Method("fedit", "FedIT: every client trains every layer (homogeneous upper bound)", _strategy("full")),
    Method("straggler", "every client held to the weakest tier's layers (alternate layers)", _strategy("straggler")),
    Method("exclusive", "only the strongest tier trains (all layers); the others sit out", _strategy("exclusive")),
    Method("fedra", "FedRA: each client draws its k layers uniformly at random every round", _strategy("random")),
    Method(
        "hetlora",
        "HetLoRA: all layers at a tier rank scaled alpha/r, rank self-pruning, zero-padded norm-weighted average",
        {
            **_strategy("tier_rank"),
            "aggregation.name": "hetlora",
            # the published method: each client a rank-r_k adapter scaled alpha / r_k, pruning its own rank
            "lora.rank_scaling": "per_rank",
            "lora.self_prune_threshold": HETLORA_PRUNE_THRESHOLD,
        },
    ),
    Method(
        "flexlora",
        "FlexLoRA: all layers at a tier rank, SVD of the sample-weighted sum of B A products",
        {**_strategy("tier_rank"), "aggregation.name": "flexlora", "aggregation.weighting": "samples"},
    ),
    Method("ffa-lora", "FFA-LoRA: A frozen at the shared init, only B trained and sent", _strategy("ffa")),
    Method(
        "legend",
        "LEGEND: the k layers nearest the output, ranks rising with depth",
        {**_strategy("legend"), "aggregation.name": "rank_fedavg"},
    ),
    *[
        Method(f"gd-{p}", f"GD-HLA, {p} pattern (fixed layers per tier)", _strategy("gd", pattern=p))
        for p in ("bottleneck", "triangle", "inverted_triangle", "uniform")
    ],
    Method("rgd", "RGD-HLA: layers drawn with the bottleneck counts as odds", _strategy("rgd", pattern="bottleneck")),
    Method("fim", "FIM-HLA: layers drawn by Fisher importance (random during warm-up)", _strategy("fim")),
    Method(
        "fed-hello",
        "Fed-HeLLo: RGD bottleneck during warm-up, Fisher importance afterwards",
        _strategy("fim+gd", pattern="bottleneck", randomized=True),
    ),
    Method(
        "fed-pilot",
        "Fed-pilot: per-client knapsack over layers under the memory budget, gradient-norm values, "
        "compensating aggregation",
        {**_strategy("fedpilot"), "aggregation.name": "fedpilot", "aggregation.weighting": "samples"},
    ),
    Method(
        "fill",
        "budget-fill: every client trains all the layers its budget affords, from the output down; masked FedAvg",
        _strategy("fill"),
    ),
    Method(
        "fill-rc",
        "budget-fill with recomputation: the most layers, deepest first, that a budget affords when some blocks "
        "recompute their activations (fewest blocks that fit); masked FedAvg",
        _strategy("fill", recompute=True),
    ),
    Method(
        "fed-pilot-rc",
        "Fed-pilot whose knapsack may recompute activations to fit deeper layer sets",
        {
            **_strategy("fedpilot", recompute=True),
            "aggregation.name": "fedpilot",
            "aggregation.weighting": "samples",
        },
    ),
    Method(
        "fed-hello-bt",
        "budget-true Fed-HeLLo: Fed-HeLLo chooses the layers, each plan fitted to its budget by recomputation "
        "(or the fitting set keeping most of them)",
        _strategy("fim+gd", pattern="bottleneck", randomized=True, depth_aware=True, recompute=True),
    ),
    Method(
        "fim-bt",
        "budget-true FIM-HLA: Fisher importance chooses the layers, each plan fitted to its budget",
        _strategy("fim", depth_aware=True, recompute=True),
    ),
    Method(
        "centralized",
        "centralized reference: one client holding all training data, the optimizer steps of a whole round per "
        "round, every layer",
        _strategy("full"),
        adjust=_centralized,
        partition_free=True,
    ),
]:
    METHODS.add(_method.name, _method)


def apply_method(tree: dict[str, Any], name: str, field: str = "compare.methods") -> dict[str, Any]:
    """A copy of a raw config tree with the method's overrides applied (the method wins)."""
    method = METHODS.get(name, field)
    out = copy.deepcopy(tree)
    for dotted, value in method.overrides.items():
        set_dotted(out, dotted, value)
    if method.adjust is not None:
        method.adjust(out, config_from_dict(copy.deepcopy(out)))
    return out


def method_overrides(name: str) -> list[str]:
    """The method's preset as `key=value` overrides (for `fedhello run --method NAME`)."""
    return [f"{key}={json.dumps(value)}" for key, value in METHODS.get(name).overrides.items()]


def method_config(tree: dict[str, Any], name: str) -> RunConfig:
    """The validated run config of method `name` on top of a raw config tree."""
    return config_from_dict(apply_method(tree, name))
