"""Engines run rounds; they move plans and updates and compute nothing an allocator or aggregator does."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from fedhello.config import RunConfig
from fedhello.registry import Registry

ENGINES: Registry[type[Engine]] = Registry("engine", "--engine")


class Engine(ABC):
    @abstractmethod
    def run(self, config: RunConfig, run_dir: Path, show_progress: bool = True) -> dict[str, Any]:
        """Run every round of `config`, write the run folder, return the summary."""
