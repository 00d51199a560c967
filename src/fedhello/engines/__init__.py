"""Engines. `ENGINES` registers the built-in ones (`builtin.py`) when it is first read, and `fedhello.engines`
imports `ENGINES` and `Engine` (their module loads torch) only when asked for them: fedhello's SuperNode launcher
(`python -m fedhello.engines.flower.supernode`), a light process that only supervises its node, loads no torch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedhello.engines.base import ENGINES, Engine

__all__ = ["ENGINES", "Engine"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from fedhello.engines import base

    return getattr(base, name)
