"""Engines. `ENGINES` (and `Engine`) import, and so register, the built-in ones when first used, not when this
package is imported: fedhello's SuperNode launcher (`python -m fedhello.engines.flower.supernode`), a light
process that only supervises its node, then loads no torch for them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedhello.engines.base import ENGINES, Engine

__all__ = ["ENGINES", "Engine"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import fedhello.engines.flower  # noqa: F401  first: it defers optional imports before anything imports peft
    from fedhello.engines import base, local  # noqa: F401  (registers `local`)
    from fedhello.engines.flower import deploy, sim  # noqa: F401  (registers; Flower itself only when run)

    return getattr(base, name)
