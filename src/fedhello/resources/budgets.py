"""Budgets in a run: turn tiers' `memory_mb` / `seconds_per_step` into layer constraints (using the cached
profile), and check afterwards how well the run's clients stayed within them."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedhello.config import RunConfig, load_config
from fedhello.errors import ConfigError
from fedhello.experiment import Experiment
from fedhello.resources.cost import BudgetError, LayerConstraint, budget_constraint
from fedhello.resources.measure import Measurement
from fedhello.resources.memory import precise_malloc
from fedhello.resources.profile import Profile, load_or_measure, measure_profile, profile_batches, tier_counts
from fedhello.rundir import CONFIG_FILE, read_metrics


def profile_for(
    experiment: Experiment,
    refresh: bool = False,
    steps: int = 3,
    warmup: int = 1,
    on_measure: Callable[[Measurement], None] | None = None,
) -> tuple[Profile, Path, bool]:
    """The cached profile of this experiment's config, measured on the first training batches when missing."""
    config, model, num_layers = experiment.config, experiment.model, experiment.num_layers
    device = str(next(model.parameters()).device)

    def measure() -> Profile:
        batches = profile_batches(experiment.task, experiment.train, config.train.batch_size)
        counts = tier_counts(config, num_layers)
        loss = experiment.task.loss
        return measure_profile(model, loss, experiment.layout, batches, num_layers, counts, steps, warmup, on_measure)

    return load_or_measure(config, device, measure, refresh=refresh)


def tier_constraints(config: RunConfig, profile: Profile | None, num_layers: int) -> list[LayerConstraint | None]:
    """One constraint per budget tier (None for count-only tiers). A tier without `layers` gets the largest
    count its budget allows written into the config, so every consumer of `tiers[i].layers` sees a number."""
    constraints: list[LayerConstraint | None] = []
    for i, tier in enumerate(config.tiers):
        if not tier.has_budget or profile is None:
            constraints.append(None)
            continue
        try:
            constraint = budget_constraint(
                num_layers, profile.memory, profile.time, tier.memory_mb, tier.seconds_per_step, tier.layers
            )
        except BudgetError as err:
            fix = "raise the budget or lower batch_size/max_length"
            raise ConfigError(f"tiers.{i}", f"budget {err}", fix) from None
        if tier.layers is None:
            tier.layers = constraint.max_layers
        constraints.append(constraint)
    return constraints


def resolve_budgets(experiment: Experiment) -> list[LayerConstraint | None]:
    """What `build_federation` calls: constraints for budget tiers, measuring the profile only when a tier
    declares a budget and no cached profile exists."""
    config = experiment.config
    if config.train.record_resources:
        # from here on large tensors are unmapped on free, so no earlier allocation can hide (by reuse of
        # freed heap) the memory a client's training adds; see fedhello.resources.memory
        precise_malloc(True)
    if not any(t.has_budget for t in config.tiers):
        if config.strategy.depth_aware:
            raise ConfigError(
                "strategy.depth_aware", "needs at least one tier with memory_mb or seconds_per_step",
                "declare a budget in tiers or set depth_aware: false",
            )
        return [None] * len(config.tiers)
    profile, _, _ = profile_for(experiment)
    return tier_constraints(config, profile, experiment.num_layers)


def budget_report(run_dir: Path) -> list[dict[str, Any]]:
    """Per tier of a finished run: the budget, the resolved constraint (from config.yaml), and the
    measured peak memory / step time of its clients (needs `train.record_resources: true`)."""
    config = load_config(run_dir / CONFIG_FILE)
    clients = [client for record in read_metrics(run_dir) for client in record.get("clients", [])]
    rows = []
    for i, tier in enumerate(config.tiers):
        mine = [c for c in clients if c.get("tier") == i]
        mems = [c["peak_mem_mb"] for c in mine if "peak_mem_mb" in c]
        secs = [c["step_seconds"] for c in mine if "step_seconds" in c]
        row: dict[str, Any] = {
            "tier": i,
            "layers": tier.layers,
            "memory_mb": tier.memory_mb,
            "seconds_per_step": tier.seconds_per_step,
            "plans": len(mine),
            "lowest_layer": min((min(c["layers"]) for c in mine if c["layers"]), default=None),
            "peak_mb_median": statistics.median(mems) if mems else None,
            "peak_mb_max": max(mems) if mems else None,
            "step_s_median": statistics.median(secs) if secs else None,
            "step_s_max": max(secs) if secs else None,
            "memory_violations": sum(m > tier.memory_mb for m in mems) if tier.memory_mb else 0,
            "time_violations": sum(s > tier.seconds_per_step for s in secs) if tier.seconds_per_step else 0,
        }
        rows.append(row)
    return rows
