"""Helpers for the server tests: tiny configs as YAML files, run through the CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fedhello.config import RunConfig


def write_yaml(config: RunConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path


def cli_env() -> dict[str, str]:
    """One thread (bitwise-comparable CPU runs, and the cores are shared) and no hub access."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedhello.cli", *args], capture_output=True, text=True, env=cli_env(), timeout=timeout
    )


@pytest.fixture
def fast_config(tiny_config: RunConfig) -> RunConfig:
    """The tiny config without plots, for runs that only check state and logs."""
    config = tiny_config.model_copy(deep=True)
    config.output.plot = False
    return config
