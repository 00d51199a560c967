"""Flower engines: `flower-sim` (simulation runtime, Ray) and `flower-deploy` (SuperLink + SuperNodes).

Both run the same ServerApp (`serverapp.py`, fedhello's shared round loop with a Flower dispatch) and
ClientApp (`clientapp.py`, fedhello's `LocalTrainer`). `fedhello.engines.ENGINES` registers the engines
(`sim.py`, `deploy.py`) without importing Flower; the apps are imported when an engine runs. Importing this
package alone loads nothing heavy, so that the SuperNode launcher (`supernode.py`) stays a small process.
"""

from fedhello.runtime import defer_optional_imports

defer_optional_imports()  # before anything in this package imports peft
