"""Client-level differential privacy for per-layer updates: clipping, per-entry noise calibrated to how many
clients trained each tensor, and privacy accounting (docs/privacy.md)."""

from fedhello.accounting import epsilon_after, max_rounds, noise_for
from fedhello.privacy.clipping import clip_change
from fedhello.privacy.mechanism import PrivateAggregator, update_noise_multiplier

__all__ = ["PrivateAggregator", "clip_change", "epsilon_after", "max_rounds", "noise_for", "update_noise_multiplier"]
