"""Engines. Importing registers the built-in ones."""

from fedhello.engines import flower, local  # noqa: F401  (registers; flower imports Flower only when run)
from fedhello.engines.base import ENGINES, Engine

__all__ = ["ENGINES", "Engine"]
