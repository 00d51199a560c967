"""`--engine flower-sim`: the Flower ServerApp and ClientApp on Flower's simulation runtime (Ray).

One virtual SuperNode per fedhello client (partition-id = client id); Ray runs as many ClientApp
actors as cores allow at `flower.client_cpus` each, and an actor keeps its model for the whole run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedhello import rundir
from fedhello.config import RunConfig
from fedhello.engines.base import ENGINES, Engine, RunOptions
from fedhello.engines.flower.app import FLOWER_ENV
from fedhello.errors import FedHelloError
from fedhello.server.observers import run_observers


def quiet_flower() -> None:
    """`app.FLOWER_ENV` in this process, unless the user set those variables."""
    for name, value in FLOWER_ENV.items():
        os.environ.setdefault(name, value)


class _HideRunSimulationDeprecation(logging.Filter):
    """`run_simulation` is the in-process simulation API fedhello chose on purpose; its deprecation notice
    (Flower prefers `flwr run`, which fedhello's flower-deploy engine uses) is noise for users."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


def backend_config(config: RunConfig) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    return {
        "client_resources": {"num_cpus": config.flower.client_cpus, "num_gpus": 0.0},
        "init_args": {"num_cpus": cores, "logging_level": logging.ERROR, "log_to_driver": True},
    }


@ENGINES.register("flower-sim")
class FlowerSimEngine(Engine):
    def execute(self, config: RunConfig, run_dir: Path, options: RunOptions) -> dict[str, Any]:
        return self.run_many([(config, run_dir)], options)[0]

    def run_many(
        self, runs: Sequence[tuple[RunConfig, Path]], options: RunOptions = RunOptions(show_progress=False)
    ) -> list[dict[str, Any]]:
        """Several runs one after another in ONE Flower simulation, so Ray starts once (a method
        comparison on a small model spends most of its time there). The runs must share
        `federation.num_clients` and `flower.client_cpus`: the virtual SuperNodes and actors are set up once."""
        if not runs:
            return []
        config = runs[0][0]
        shared = {(c.federation.num_clients, c.flower.client_cpus) for c, _ in runs}
        if len(shared) > 1:
            raise FedHelloError(
                "flower-sim: runs sharing one simulation need the same federation.num_clients and "
                f"flower.client_cpus, got {sorted(shared)}"
            )
        for run_config, _ in runs:
            run_observers(run_config)  # a logger whose package is missing fails here, before Ray starts
        quiet_flower()
        import ray
        from flwr.simulation import run_simulation

        from fedhello.engines.flower.clientapp import app as client_app
        from fedhello.engines.flower.serverapp import build_server_app

        started_ray = not ray.is_initialized()
        hide = _HideRunSimulationDeprecation()
        logging.getLogger("flwr").addFilter(hide)
        try:
            run_simulation(
                server_app=build_server_app(runs, options),
                client_app=client_app,
                num_supernodes=config.federation.num_clients,
                backend_config=backend_config(config),
            )
        except Exception as err:  # Flower wraps ServerApp errors; keep fedhello's one-line ones
            cause = err if isinstance(err, FedHelloError) else err.__cause__
            if isinstance(cause, FedHelloError):
                raise cause from None
            raise
        finally:
            logging.getLogger("flwr").removeFilter(hide)
            if started_ray and ray.is_initialized():
                ray.shutdown()  # stops the raylet and workers this run started
        return [finished_summary(run_dir) for _, run_dir in runs]


def finished_summary(run_dir: Path) -> dict[str, Any]:
    """The summary the ServerApp wrote; a run that ended without one failed (its log says why)."""
    summary = rundir.read_summary(run_dir)
    if summary is None:
        log = run_dir / rundir.FLOWER_LOG
        tail = log.read_text().strip().splitlines()[-1:] if log.exists() else []
        raise FedHelloError(f"the Flower run ended without a summary ({' '.join(tail) or 'no log'}); see {run_dir}")
    return summary
