"""The registries a run is assembled from, by name: strategies (allocators, with their options model and client
hook), aggregators and methods (named presets of a strategy, an aggregator and their options).

They live at the bottom of the package so that loading a config can check names and pairings without importing
the algorithms: each registry imports `fedhello.methods` -- every method folder, which registers its parts -- the
first time it is read (`Registry(builtins=...)`). A lookup therefore finds the same names whatever the caller
imported before. The item types are the base classes `fedhello.allocation.Allocator`,
`fedhello.aggregation.Aggregator` and `fedhello.methods.Method`, which re-export these registries typed.
"""

from __future__ import annotations

from typing import Any

from fedhello.registry import Registry

BUILTINS = "fedhello.methods"  # importing it registers every built-in strategy, aggregator and method

ALLOCATORS: Registry[Any] = Registry("strategy", "strategy.name", builtins=BUILTINS)
AGGREGATORS: Registry[Any] = Registry("aggregator", "aggregation.name", builtins=BUILTINS)
METHODS: Registry[Any] = Registry("method", "--method", builtins=BUILTINS)
