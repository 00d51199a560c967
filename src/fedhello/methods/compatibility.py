"""Which strategies, aggregators and options can run together: checked once, when a config is loaded.

Every allocator declares the kinds of upload its plans produce (`Allocator.uploads`: full-rank, rank-truncated,
one factor) and whether it needs Fisher scores (`needs_importance`); every aggregator declares the kinds it
merges correctly (`Aggregator.accepts`). A pairing outside those declarations would not fail loudly later:
FedAvg of rank-truncated factors silently broadcasts a rank-1 factor into every row of the global adapter, and
a Fisher estimate on an empty proxy set scores every layer zero. So `RunConfig` calls `check_run_config` and
such a config never gets past loading.
"""

from __future__ import annotations

from fedhello.config import RUN_CONFIG_CHECKS, RunConfig
from fedhello.errors import ConfigError


def planned_uploads(config: RunConfig) -> frozenset:
    """The kinds of upload a run's clients produce: the strategy's, plus rank-truncated ones when clients
    may prune their own rank (`lora.self_prune_threshold`)."""
    from fedhello.allocation import ALLOCATORS
    from fedhello.plan import Upload

    uploads = set(ALLOCATORS.get(config.strategy.name).uploads)
    if config.lora.self_prune_threshold > 0:
        uploads.add(Upload.TRUNCATED)
    return frozenset(uploads)


def compatible_aggregators(uploads: frozenset) -> list[str]:
    """Names of the registered aggregators that accept every kind in `uploads`."""
    from fedhello.aggregation import AGGREGATORS

    return [name for name in AGGREGATORS.names() if uploads <= AGGREGATORS.get(name).accepts]


def check_run_config(config: RunConfig) -> None:
    """Raise a one-line `ConfigError` when the strategy, the aggregator and the options cannot give a true
    result together (unknown names included)."""
    from fedhello.aggregation import AGGREGATORS
    from fedhello.allocation import ALLOCATORS

    strategy, aggregation = config.strategy.name, config.aggregation.name
    if strategy not in ALLOCATORS:
        raise ConfigError("strategy.name", f"unknown strategy '{strategy}'", f"use one of {ALLOCATORS.names()}")
    if aggregation not in AGGREGATORS:
        raise ConfigError(
            "aggregation.name", f"unknown aggregator '{aggregation}'", f"use one of {AGGREGATORS.names()}"
        )
    uploads = planned_uploads(config)
    refused = sorted(uploads - AGGREGATORS.get(aggregation).accepts)
    if refused:
        source = f"strategy '{strategy}'"
        if config.lora.self_prune_threshold > 0 and refused == ["rank-truncated"]:
            source += " with lora.self_prune_threshold > 0"
        raise ConfigError(
            "aggregation.name",
            f"'{aggregation}' cannot merge the {' and '.join(refused)} uploads of {source}",
            f"use one of {compatible_aggregators(uploads)}",
        )
    if ALLOCATORS.get(strategy).needs_importance and config.data.proxy_size == 0:
        raise ConfigError(
            "data.proxy_size",
            f"0 leaves strategy '{strategy}' no proxy samples to estimate Fisher importance on",
            "hold out some training samples (e.g. 50), or use a strategy without importance such as rgd",
        )


def check_proxy_set(config: RunConfig, proxy_samples: int, train_samples: int) -> None:
    """When the federation is built: an importance strategy needs a non-empty proxy set. The loader caught
    `data.proxy_size: 0`; this catches a training split too small to hold one out (at most a tenth of it
    is used, so fewer than 10 samples leave none)."""
    from fedhello.allocation import ALLOCATORS

    if proxy_samples == 0 and ALLOCATORS.get(config.strategy.name).needs_importance:
        raise ConfigError(
            "data.proxy_size",
            f"the training split has {train_samples} samples, too few to hold out a proxy set (at most a tenth "
            f"of it), so strategy '{config.strategy.name}' has nothing to estimate Fisher importance on",
            "use at least 10 training samples, or a strategy without importance such as rgd",
        )


def budget_note(config: RunConfig) -> str | None:
    """A line to show before a run whose strategy ignores the tier budgets (`Allocator.respects_budgets`),
    so nobody reads its numbers as those of a budget-respecting method; None otherwise."""
    from fedhello.allocation import ALLOCATORS

    if ALLOCATORS.get(config.strategy.name).respects_budgets:
        if (config.strategy.depth_aware or config.strategy.recompute) and not any(t.has_budget for t in config.tiers):
            return (
                "note: strategy.depth_aware / recompute have no effect: no tier declares memory_mb, total_memory_mb "
                "or seconds_per_step, so every plan is the strategy's own"
            )
        return None
    return (
        f"note: strategy '{config.strategy.name}' ignores the tier budgets: every client trains every layer "
        "(a homogeneous method, as published)"
    )


RUN_CONFIG_CHECKS.append(check_run_config)  # refuse impossible pairings whenever a config is validated
