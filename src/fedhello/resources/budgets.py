"""Budgets in a run: turn tiers' `memory_mb` / `seconds_per_step` into layer constraints (using the cached
profile), and check afterwards how well the run's clients stayed within them."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fedhello.config import RunConfig, TierConfig, load_config
from fedhello.errors import ConfigError
from fedhello.experiment import Experiment
from fedhello.models.quantize import QUANTIZATIONS
from fedhello.models.quantize import resolve as resolve_quantization
from fedhello.resources.cost import BudgetError, LayerConstraint, budget_constraint, most_depth
from fedhello.resources.measure import Measurement
from fedhello.resources.memory import precise_malloc
from fedhello.resources.profile import (
    Profile,
    cache_dir,
    load_or_measure,
    measure_profile,
    profile_batches,
    profile_key,
    tier_counts,
)
from fedhello.rundir import CONFIG_FILE, read_metrics


def profile_for(
    experiment: Experiment,
    refresh: bool = False,
    steps: int = 3,
    warmup: int = 1,
    on_measure: Callable[[Measurement], None] | None = None,
    quantization: str | None = None,
) -> tuple[Profile, Path, bool]:
    """The cached profile of this experiment's config with the base weights in `quantization` (None: the
    run's `model.quantization`), measured on the first training batches when missing. Another quantization
    than the run's is measured on a model of its own, built only when no cached profile exists."""
    run_quantization = experiment.config.model.quantization
    quantization = quantization or run_quantization
    config = experiment.config
    if quantization != run_quantization:
        config = config.model_copy(deep=True)
        config.model.quantization = quantization
    device = str(next(experiment.model.parameters()).device)

    def measure() -> Profile:
        model = experiment.model
        if quantization != run_quantization:
            with torch.random.fork_rng():
                model = experiment.task.build_model(quantization)
        batches = profile_batches(experiment.task, experiment.train, config.train.batch_size)
        counts = tier_counts(config, experiment.num_layers)
        return measure_profile(
            model,
            experiment.task.loss,
            experiment.layout,
            batches,
            experiment.num_layers,
            counts,
            steps,
            warmup,
            on_measure,
            quantization=quantization,
            micro_batches=config.train.grad_accum,
        )

    return load_or_measure(config, device, measure, refresh=refresh)


ProfileOf = Callable[[str], Profile]  # quantization -> the profile of the run's model loaded in it


def tier_quantizations(config: RunConfig, tier: TierConfig) -> list[str]:
    """The quantizations a tier may load: its own, the run's, or for `auto` every one, most precise first."""
    if tier.quantization == "auto":
        return list(QUANTIZATIONS)
    return [resolve_quantization(tier.quantization, config)]


def tier_constraints(
    config: RunConfig,
    profile_of: ProfileOf | None,
    num_layers: int,
    choices: dict[int, dict[str, LayerConstraint | str]] | None = None,
) -> list[LayerConstraint | None]:
    """One constraint per budget tier (None for count-only tiers). A tier without `layers` gets the largest
    count its budget allows with activations kept written into the config (`kept_count`), so every consumer of
    `tiers[i].layers` sees a number;
    a tier with `quantization: auto` gets the quantization with which its budget trains the most depth.
    `choices`, when given, receives for every auto tier each quantization's constraint (or why it failed)."""
    constraints: list[LayerConstraint | None] = []
    for i, tier in enumerate(config.tiers):
        if not tier.has_budget or profile_of is None:
            constraints.append(None)
            continue
        auto = tier.quantization == "auto"
        options: dict[str, LayerConstraint] = {}
        failures: dict[str, str] = {}
        memory_mb: dict[str, float | None] = {}
        for quantization in tier_quantizations(config, tier):
            profile = profile_of(quantization)
            memory_mb[quantization] = tier.memory_mb
            if tier.memory_fraction is not None:  # relative to this profile's all-layer training memory
                memory_mb[quantization] = round(tier.memory_fraction * full_training_mb(profile), 3)
            # with recomputation a tier's layer count is what layer-count strategies hand out (and what fits with
            # activations kept when the run wrote it); budget-true allocators are bound by the budgets alone
            recompute = config.strategy.recompute and profile.measured_recompute
            try:
                constraint = budget_constraint(
                    num_layers,
                    profile.memory,
                    profile.time,
                    memory_mb[quantization],
                    tier.seconds_per_step,
                    None if recompute else tier.layers,
                    total=profile.total_memory,
                    total_memory_mb=tier.total_memory_mb,
                    recompute=recompute,
                )
                if recompute and tier.layers and not constraint.fits(tier.layers, num_layers - tier.layers):
                    raise BudgetError(f"too small for {tier.layers} layers even at the top, recomputing")
                options[quantization] = constraint
            except BudgetError as err:
                failures[quantization] = str(err)
        if auto and choices is not None:
            choices[i] = {**failures, **options}
        if not options:
            why = "; ".join(f"{q}: {err}" if auto else err for q, err in failures.items())
            fix = "raise the budget, quantize the base weights, or lower batch_size/max_length"
            raise ConfigError(f"tiers.{i}", f"budget {why}", fix) from None
        chosen = most_depth(options, num_layers)
        tier.memory_mb = memory_mb[chosen]  # a memory_fraction is written down as the MiB it stands for
        if auto:
            tier.quantization = chosen
        if tier.layers is None:
            tier.layers = kept_count(options[chosen], num_layers)
        constraints.append(options[chosen])
    return constraints


def full_training_mb(profile: Profile) -> float:
    """What training every layer costs with activations kept: the measurement, else the fitted prediction."""
    full = profile.find(range(profile.num_layers))
    if full is not None and full.peak_mb is not None:
        return full.peak_mb
    if profile.memory is None:
        raise BudgetError("the profile measured no memory (memory_fraction needs it)")
    return profile.memory.predict(range(profile.num_layers), profile.num_layers)


def kept_count(constraint: LayerConstraint, num_layers: int) -> int:
    """The layer count written for a tier that declares only budgets: the most layers its budget trains with
    activations kept (at least 1). That is the count layer-count strategies (`fim+gd`, `rgd`, ...) hand out;
    with `strategy.recompute` the constraint itself may admit more, which budget-true allocators (`fill`,
    `fedpilot`) use, and `depth_aware` fits the count-based plans by recomputing where their layers need it."""
    if constraint.recompute is None:
        return constraint.max_layers
    kept = [n for n in range(constraint.max_layers, 0, -1) if constraint.recompute_for(n, num_layers - n) == 0]
    return kept[0] if kept else 1


def resolve_budgets(experiment: Experiment) -> list[LayerConstraint | None]:
    """What `build_federation` calls: constraints for budget tiers, measuring a profile (per quantization a
    tier may load) only when a tier declares a budget and no cached profile exists."""
    config = experiment.config
    if config.train.record_resources:
        # from here on large tensors are unmapped on free, so no earlier allocation can hide (by reuse of
        # freed heap) the memory a client's training adds; see fedhello.resources.memory
        precise_malloc(True)
    if not any(t.has_budget for t in config.tiers):  # depth_aware / recompute then change nothing (budget_note)
        return [None] * len(config.tiers)
    return tier_constraints(config, ProfileCache(experiment), experiment.num_layers)


class ProfileCache:
    """`quantization -> profile` for one experiment (a `ProfileOf`), each loaded or measured once with
    `profile_for(experiment, quantization=..., **measure)`; `found[q]` keeps (profile, cache path, cached)."""

    def __init__(self, experiment: Experiment, on_profile: Callable[[str], None] | None = None, **measure: Any) -> None:
        self.experiment = experiment
        self.on_profile = on_profile  # hears a quantization before its profile is loaded or measured
        self.measure = measure
        self.found: dict[str, tuple[Profile, Path, bool]] = {}

    def __call__(self, quantization: str) -> Profile:
        if quantization not in self.found:
            if self.on_profile:
                self.on_profile(quantization)
            self.found[quantization] = profile_for(self.experiment, quantization=quantization, **self.measure)
        return self.found[quantization][0]


def cached_profile(config: RunConfig, quantization: str) -> Profile | None:
    """The budget profile a CPU run of `config` would read for `quantization`, if it is cached (None otherwise,
    and always for a GPU run, whose key holds the device the model lands on). Nothing is built or measured."""
    if config.train.device != "cpu":
        return None
    keyed = config.model_copy(deep=True)
    keyed.model.quantization = quantization
    path = cache_dir() / f"{profile_key(keyed, 'cpu')}.json"
    try:
        return Profile.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def profiles_cached(config: RunConfig) -> bool:
    """Whether every budget profile a run of `config` reads is cached (so it starts without measuring one)."""
    return all(
        cached_profile(config, quantization) is not None
        for tier in config.tiers
        if tier.has_budget
        for quantization in tier_quantizations(config, tier)
    )


def planned_constraints(config: RunConfig, num_layers: int) -> list[LayerConstraint | None] | None:
    """The constraints a run of `config` will plan with, from its cached profiles alone (None when a profile it
    needs is not cached: the run measures it). The config itself is left as it is."""
    profiles: dict[str, Profile] = {}
    for tier in config.tiers:
        if not tier.has_budget:
            continue
        for quantization in tier_quantizations(config, tier):
            profile = profiles.get(quantization) or cached_profile(config, quantization)
            if profile is None:
                return None
            profiles[quantization] = profile
    return tier_constraints(config.model_copy(deep=True), profiles.__getitem__, num_layers)


def budget_report(run_dir: Path) -> list[dict[str, Any]]:
    """Per tier of a finished run: the budget, the resolved constraint (from config.yaml), and the
    measured peak memory / step time of its clients (needs `train.record_resources: true`)."""
    config = load_config(run_dir / CONFIG_FILE)
    clients = [client for record in read_metrics(run_dir) for client in record.get("clients", [])]
    rows = []
    for i, tier in enumerate(config.tiers):
        mine = [c for c in clients if c.get("tier") == i]
        mems = [c["peak_mem_mb"] for c in mine if "peak_mem_mb" in c]
        totals = [c["total_mem_mb"] for c in mine if "total_mem_mb" in c]
        # the time the budget was converted with (`Profile.time`): CPU time on the CPU, the wall clock elsewhere
        time_key = (
            "step_cpu_seconds"
            if config.train.device == "cpu" and all("step_cpu_seconds" in c for c in mine if "step_seconds" in c)
            else "step_seconds"
        )
        secs = [c[time_key] for c in mine if time_key in c]
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
            "quantization": resolve_quantization(tier.quantization, config),
            "total_memory_mb": tier.total_memory_mb,
            "total_mb_median": statistics.median(totals) if totals else None,
            "total_mb_max": max(totals) if totals else None,
            "total_violations": sum(t > tier.total_memory_mb for t in totals) if tier.total_memory_mb else 0,
            "memory_violations": sum(m > tier.memory_mb for m in mems) if tier.memory_mb else 0,
            "time_violations": sum(s > tier.seconds_per_step for s in secs) if tier.seconds_per_step else 0,
            # a budget tier's count is what it trains with activations kept; recomputing plans may train more
            "layer_violations": sum(len(c["layers"]) > tier.layers for c in mine)
            if tier.layers and not tier.has_budget
            else 0,
            "recomputing_plans": sum(bool(c.get("recompute")) for c in mine),
            "time_key": time_key,
        }
        rows.append(row)
    return rows
