"""The logger registry and what loggers share: the package check and the scalars of a round record."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from fedhello.errors import ConfigError
from fedhello.events import RunObserver
from fedhello.registry import Registry

LOGGERS: Registry[type[RunObserver]] = Registry("logger", "output.loggers")


def require(module: str, pip_name: str, logger: str) -> ModuleType:
    """Import `module`, or stop with a one-line config error naming the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            "output.loggers", f"the {logger} logger needs the {pip_name} package", f"pip install {pip_name}"
        ) from None


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric top-level values of a round record (accuracy, loss, bytes, seconds, any metric a round
    adds), without the round number; None (e.g. not evaluated), booleans and nested values are left out."""
    return {
        key: float(value)
        for key, value in record.items()
        if key != "round" and isinstance(value, int | float) and not isinstance(value, bool)
    }
