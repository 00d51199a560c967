"""The engine interface. Engines run rounds; they move plans and updates and compute nothing an allocator
or aggregator does."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from fedhello.config import RunConfig
from fedhello.errors import ConfigError
from fedhello.events import RunObserver
from fedhello.registry import Registry


@dataclass(frozen=True)
class RunOptions:
    """How to run, beyond the config: a progress bar, resuming the run folder, the caller's observers."""

    show_progress: bool = True
    resume: bool = False  # continue the run folder from its last checkpoint
    observers: Sequence[RunObserver] = ()  # hear the run's events after the writer and `output.loggers`


class Engine(ABC):
    """Runs every round of a config with the shared round loop (`fedhello.server.loop.run_rounds`) and its own
    dispatch (how plans reach clients and updates come back). A subclass implements `execute` and sets
    `serves_node_data` when its clients can hold data of their own (`flower.node_data`)."""

    serves_node_data: ClassVar[bool] = False

    def run(
        self,
        config: RunConfig,
        run_dir: Path,
        *,
        show_progress: bool = True,
        resume: bool = False,
        observers: Sequence[RunObserver] = (),
    ) -> dict[str, Any]:
        """Run every round of `config` into `run_dir` and return the summary (summary.json's content).

        `show_progress` draws a progress bar; `resume` continues `run_dir` from its last checkpoint;
        `observers` follow the run's events (`fedhello.events`) after the run folder writer and the
        `output.loggers`.
        """
        if config.flower.node_data and not self.serves_node_data:
            raise ConfigError(
                "flower.node_data", "only SuperNodes hold data of their own", "run with --engine flower-deploy"
            )
        return self.execute(config, Path(run_dir), RunOptions(show_progress, resume, tuple(observers)))

    @abstractmethod
    def execute(self, config: RunConfig, run_dir: Path, options: RunOptions) -> dict[str, Any]:
        """`run` with its options gathered."""


ENGINES: Registry[type[Engine]] = Registry("engine", "--engine", builtins="fedhello.engines.builtin")
