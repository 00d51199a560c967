"""The note a run prints about its strategy. Which strategies, aggregators and options can run together is checked
when a config is loaded (`fedhello.config.validate_run`); a proxy set too small to hold out, when the experiment is
built (`fedhello.experiment.check_proxy_set`)."""

from __future__ import annotations

from fedhello.components import ALLOCATORS
from fedhello.config import RunConfig


def budget_note(config: RunConfig) -> str | None:
    """A line to show before a run whose strategy ignores the tier budgets (`Allocator.respects_budgets`),
    so nobody reads its numbers as those of a budget-respecting method; None otherwise."""
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
