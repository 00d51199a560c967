"""A name -> item registry, so adding a strategy, partitioner, engine or method touches no central `if` chain.

`Registry.get` is the one place a name is checked: an unknown name is a one-line `ConfigError` that names the
config field (or command-line option) it came from and the registered names.

A registry may name the module that registers its built-in items (`builtins`): it is imported the first time the
registry is read, as a plugin would be loaded, so what a lookup finds never depends on what the caller happened
to import before (`fedhello.components` holds the registries filled that way).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fedhello.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes, functions or objects. `@REGISTRY.register("name")` on a class or function,
    `REGISTRY.add("name", item)` for an object; `field` is where users choose a name (e.g. `strategy.name`)."""

    def __init__(self, kind: str, field: str, builtins: str | None = None) -> None:
        self.kind = kind
        self.field = field
        self.builtins = builtins
        self._items: dict[str, T] = {}

    @property
    def _loaded(self) -> dict[str, T]:
        """The items, after importing the built-in ones (once; a registration during that import is fine)."""
        if self.builtins is not None:
            module, self.builtins = self.builtins, None
            importlib.import_module(module)
        return self._items

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            return self.add(name, item)

        return decorator

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item
        return item

    def get(self, name: str, field: str | None = None) -> T:
        """The item registered as `name`; an unknown name is a `ConfigError` on `field` (default: the
        registry's own field)."""
        if name not in self._loaded:
            raise ConfigError(
                field or self.field, f"unknown {self.kind} '{name}'", f"use one of {', '.join(self.names())}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._loaded)

    def items(self) -> list[tuple[str, T]]:
        """(name, item) pairs in registration order."""
        return list(self._loaded.items())

    def __contains__(self, name: object) -> bool:
        return name in self._loaded

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded)

    def __len__(self) -> int:
        return len(self._loaded)
