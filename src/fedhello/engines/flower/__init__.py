"""Flower engines: `flower-sim` (simulation runtime, Ray) and `flower-deploy` (SuperLink + SuperNodes).

Both run the same ServerApp (`serverapp.py`, fedhello's shared round loop with a Flower dispatch) and
ClientApp (`clientapp.py`, fedhello's `LocalTrainer`). Importing this package registers the engines
without importing Flower; the apps are imported when an engine runs.
"""

from fedhello.runtime import defer_optional_imports

defer_optional_imports()  # before anything below imports peft

from fedhello.engines.flower import deploy, sim  # noqa: E402, F401  (registers)
