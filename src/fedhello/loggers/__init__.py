"""Experiment loggers, selected by name with `output.loggers` (e.g. `[tensorboard, mlflow]`).

A logger is a `fedhello.events.RunObserver` registered in `LOGGERS`; its constructor takes no arguments
and only checks that its package is installed (a missing one is a one-line `ConfigError` on
`output.loggers` with the pip command), so a run fails before its model is loaded, not after.
"""

from fedhello.loggers import mlflow_logger, tensorboard_logger  # noqa: F401  (registers)
from fedhello.loggers.base import LOGGERS, scalars

__all__ = ["LOGGERS", "scalars"]
