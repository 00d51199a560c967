"""Engines. Importing registers the built-in ones."""

from fedhello.engines import local  # noqa: F401  (registers)
from fedhello.engines.base import ENGINES, Engine

__all__ = ["ENGINES", "Engine"]
