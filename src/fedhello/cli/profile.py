"""`fedhello profile CONFIG`: measure (or load the cached) budget profile of a config -- one per base-weight
quantization its tiers may load, or those asked for -- and print the per-tier cost tables with the constraints
its budgets become."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fedhello.config import RunConfig
from fedhello.experiment import build_experiment
from fedhello.models.quantize import QUANTIZATIONS, check_available
from fedhello.resources.budgets import ProfileCache, tier_constraints, tier_quantizations
from fedhello.resources.cost import LayerConstraint, reachable_depth
from fedhello.resources.measure import Measurement
from fedhello.resources.report import format_profile


def profile_command(
    config: RunConfig,
    refresh: bool = False,
    steps: int = 3,
    warmup: int = 1,
    echo: Callable[[str], None] | None = None,
    quantizations: Sequence[str] = (),
) -> str:
    """The formatted profiles of `config`, measured on the samples a run profiles on (two batches of the longest
    training rows) unless cached; `echo` hears each measurement as it is taken. Without
    `quantizations`, every quantization a tier may load (the run's, the tiers' own, all for `auto`)."""
    for quantization in quantizations:
        check_available(quantization, "--quantization")
    # every training row: the profile measures the longest ones, as a run's does (the same cache entry)
    experiment = build_experiment(config)
    wanted = set(quantizations) or {q for tier in config.tiers for q in tier_quantizations(config, tier)}

    def progress(m: Measurement) -> None:
        if echo:
            echo(f"  measured {m.label:<16} peak {m.peak_mb or 0:8.1f} MiB  step {m.step_seconds:.3f} s")

    def starting(quantization: str) -> None:
        if echo:
            echo(f"profiling with the base weights in {quantization}")

    profiles = ProfileCache(
        experiment, on_profile=starting, refresh=refresh, steps=steps, warmup=warmup, on_measure=progress
    )
    for quantization in QUANTIZATIONS:  # most precise first, so the tables come in a fixed order
        if quantization in wanted:
            profiles(quantization)
    choices: dict[int, dict[str, LayerConstraint | str]] = {}
    constraints = tier_constraints(config, profiles, experiment.num_layers, choices)
    # the tiers' constraints may need other profiles than those asked for; only the asked ones are printed
    tables = []
    for quantization in (q for q in QUANTIZATIONS if q in wanted):
        profile, path, cached = profiles.found[quantization]
        source = f"cached in {path}" if cached else f"measured now, cached in {path}"
        tables.append(format_profile(profile, config, constraints, source))
    return "\n\n".join(tables + [format_choices(config, choices, experiment.num_layers)] if choices else tables)


def format_choices(config: RunConfig, choices: dict[int, dict[str, LayerConstraint | str]], num_layers: int) -> str:
    """Why each `quantization: auto` tier loads what it loads: what every quantization would allow."""
    lines = ["quantization: auto (the most trainable depth within total_memory_mb; ties go to the more precise):"]
    for i, options in sorted(choices.items()):
        tier = config.tiers[i]
        lines.append(f"  tier {i} (total_memory_mb {tier.total_memory_mb:g}) -> {tier.quantization}")
        for quantization in QUANTIZATIONS:
            option = options.get(quantization)
            if isinstance(option, LayerConstraint):
                lines.append(
                    f"    {quantization:<5} up to {option.max_layers} layers, down to layer "
                    f"{num_layers - reachable_depth(option, num_layers)} (depth {reachable_depth(option, num_layers)})"
                )
            elif option is not None:
                lines.append(f"    {quantization:<5} {option}")
    return "\n".join(lines)
