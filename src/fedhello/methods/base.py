"""A method is a named preset: the strategy that decides the plans (with its options), the aggregator that merges
the updates, and any other option they need, written as config overrides. Everything else (task, partition,
tiers, seeds, budgets) comes from the experiment config, so all methods of a comparison share it.

Each method is one folder of `fedhello.methods` (its allocator, aggregator, client hook and options) whose
`__init__.py` registers its parts and its `Method`; docs/architecture.md shows how to add one.
"""

from __future__ import annotations

import copy
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fedhello import components
from fedhello.config import RunConfig, config_from_dict, drop_foreign_options, set_dotted
from fedhello.registry import Registry


@dataclass(frozen=True)
class Method:
    """A named preset. `overrides` are dotted config paths -> values (`strategy()` writes a strategy's);
    `adjust` changes the raw config tree after them, reading the experiment's resolved config (e.g. the
    centralized reference's step count); `partition_free` methods set their own partition, so a grid runs them
    once per seed."""

    name: str
    summary: str
    overrides: dict[str, Any] = field(default_factory=dict)
    adjust: Callable[[dict[str, Any], RunConfig], None] | None = None
    partition_free: bool = False


METHODS = typing.cast(Registry[Method], components.METHODS)


def strategy(name: str, aggregator: str | None = None, weighting: str | None = None, **options: Any) -> dict[str, Any]:
    """The overrides of a preset: its strategy and options, and its aggregator (with its weighting) when it is not
    the experiment's. Whether plans are fitted to budgets and may recompute activations is part of what a method
    is, so every preset says so (off unless given): a base config that turns them on (e.g. the default's
    budget-true `fill-rc`) does not turn `fill` into `fill-rc`."""
    options = {"depth_aware": False, "recompute": False, **options}
    out = {"strategy.name": name, **{f"strategy.{k}": v for k, v in options.items()}}
    if aggregator is not None:
        out["aggregation.name"] = aggregator
    if weighting is not None:
        out["aggregation.weighting"] = weighting
    return out


def register(method: Method) -> Method:
    """Add a method to `METHODS` (a method folder's registration line)."""
    return METHODS.add(method.name, method)


def apply_method(tree: dict[str, Any], name: str, field: str = "compare.methods") -> dict[str, Any]:
    """A copy of a raw config tree with the method's overrides applied (the method wins)."""
    method = METHODS.get(name, field)
    out = copy.deepcopy(tree)
    for dotted, value in method.overrides.items():
        set_dotted(out, dotted, value)
    drop_foreign_options(out)
    if method.adjust is not None:
        method.adjust(out, config_from_dict(copy.deepcopy(out)))
    return out


def method_overrides(name: str) -> list[str]:
    """The method's preset as `key=value` overrides (for `fedhello run --method NAME`)."""
    return [f"{key}={json.dumps(value)}" for key, value in METHODS.get(name).overrides.items()]


def method_config(tree: dict[str, Any], name: str) -> RunConfig:
    """The validated run config of method `name` on top of a raw config tree."""
    return config_from_dict(apply_method(tree, name))
