"""The built-in engines: importing this module registers them. `ENGINES` imports it the first time it is read,
as a plugin would be loaded (`fedhello.registry`), so that importing `fedhello.engines` alone loads nothing heavy."""

import fedhello.engines.flower  # noqa: F401  first: it defers optional imports before anything imports peft
from fedhello.engines import local  # noqa: F401  (registers `local`)
from fedhello.engines.flower import deploy, sim  # noqa: F401  (registers; Flower itself only when run)
