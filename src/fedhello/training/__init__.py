"""Client-side local training."""

from fedhello.training.pool import TrainerPool
from fedhello.training.trainer import LocalTrainer

__all__ = ["LocalTrainer", "TrainerPool"]
