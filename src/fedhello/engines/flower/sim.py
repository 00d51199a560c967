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
from fedhello.errors import ConfigError, FedHelloError
from fedhello.runtime import quiet_libraries
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


def client_gpus(config: RunConfig, cores: int, gpus: int) -> float:
    """GPU share per virtual client: `flower.client_gpus`, or (None) the visible GPUs split among the actors
    that run at once when training is on CUDA, else 0 (Ray then hides the GPU from the actors)."""
    if config.flower.client_gpus is not None:
        if config.flower.client_gpus > 0 and gpus == 0:
            raise ConfigError("flower.client_gpus", "no GPU is visible on this machine", "set it to 0")
        return config.flower.client_gpus
    if gpus == 0 or config.train.device == "cpu":
        return 0.0
    parallel = max(1, min(config.federation.num_clients, int(cores // config.flower.client_cpus)))
    return min(1.0, gpus / parallel)


def backend_config(config: RunConfig) -> dict[str, Any]:
    import torch

    cores = os.cpu_count() or 1
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {
        "client_resources": {"num_cpus": config.flower.client_cpus, "num_gpus": client_gpus(config, cores, gpus)},
        "init_args": {"num_cpus": cores, "num_gpus": gpus, "logging_level": logging.ERROR, "log_to_driver": True},
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

        quiet_libraries()  # again: importing flwr.simulation turned every DeprecationWarning on ("once")

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
