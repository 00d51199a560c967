"""Flower engines: `flower-sim` (simulation runtime, Ray) and `flower-deploy` (SuperLink + SuperNodes).

Both run the same ServerApp (`serverapp.py`, fedhello's shared round loop with a Flower dispatch) and
ClientApp (`clientapp.py`, fedhello's `LocalTrainer`). Importing this package registers the engines
without importing Flower; the apps are imported when an engine runs.
"""

from fedhello.engines.flower import deploy, sim  # noqa: F401  (registers)
