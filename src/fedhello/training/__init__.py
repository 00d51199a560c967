"""Client-side local training."""

from fedhello.training.trainer import LocalTrainer, extract_state, freeze_for_plan, load_state

__all__ = ["LocalTrainer", "extract_state", "freeze_for_plan", "load_state"]
