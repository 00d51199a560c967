"""Fixtures for the server tests: tiny configs as YAML files and the CLI run in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from fedhello.config import RunConfig


@pytest.fixture
def fast_config(tiny_config: RunConfig) -> RunConfig:
    """The tiny config without plots, for runs that only check state and logs."""
    config = tiny_config.model_copy(deep=True)
    config.output.plot = False
    return config


@pytest.fixture
def write_yaml() -> Callable[[RunConfig, Path], Path]:
    def write(config: RunConfig, path: Path) -> Path:
        path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        return path

    return write


@pytest.fixture
def cli_env() -> dict[str, str]:
    """One thread (bitwise-comparable CPU runs, and the cores are shared) and no hub access."""
    offline = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **offline}


@pytest.fixture
def cli(cli_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess]:
    """`fedhello ARGS...` in a fresh interpreter, as a user runs it."""

    def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "fedhello.cli", *args]
        return subprocess.run(command, capture_output=True, text=True, env=cli_env, timeout=timeout)

    return run
