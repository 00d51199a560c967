"""Tasks (model family + preprocessing + metric). Importing registers the built-in ones."""

from fedhello.tasks import causal_lm, image_classification, text_classification  # noqa: F401  (registers)
from fedhello.tasks.base import TASKS, Task

__all__ = ["TASKS", "Task"]
