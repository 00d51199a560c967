"""`fedhello profile CONFIG`: measure (or load the cached) budget profile of a config and print the per-tier
cost table with the constraints its budgets become."""

from __future__ import annotations

from collections.abc import Callable

from fedhello.config import RunConfig
from fedhello.experiment import build_experiment
from fedhello.resources.budgets import profile_for, tier_constraints
from fedhello.resources.measure import Measurement
from fedhello.resources.report import format_profile


def profile_command(
    config: RunConfig,
    refresh: bool = False,
    steps: int = 3,
    warmup: int = 1,
    echo: Callable[[str], None] | None = None,
) -> str:
    """The formatted profile of `config`, measured on the samples a run profiles on (the first two training
    batches after the proxy set) unless cached; `echo` hears each measurement as it is taken."""
    experiment = build_experiment(config, train_samples=2 * config.train.batch_size)

    def progress(m: Measurement) -> None:
        if echo:
            echo(f"  measured {m.label:<16} peak {m.peak_mb or 0:8.1f} MiB  step {m.step_seconds:.3f} s")

    profile, path, cached = profile_for(experiment, refresh=refresh, steps=steps, warmup=warmup, on_measure=progress)
    constraints = tier_constraints(config, profile, experiment.num_layers)
    source = f"cached in {path}" if cached else f"measured now, cached in {path}"
    return format_profile(profile, config, constraints, source)
