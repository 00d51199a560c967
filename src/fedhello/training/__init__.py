"""Client-side local training."""

from fedhello.training.trainer import LocalTrainer

__all__ = ["LocalTrainer"]
