"""Heterogeneous LoRA allocation (HLA) strategies. Importing registers the built-in ones."""

from fedhello.allocation import (
    baselines,  # noqa: F401  (registers)
    budget_true,  # noqa: F401  (registers)
    strategies,  # noqa: F401  (registers)
)
from fedhello.allocation.base import ALLOCATORS, Allocator, sample_layers
from fedhello.allocation.patterns import PATTERNS, pattern_counts, tier_layers
from fedhello.plan import Upload

__all__ = ["ALLOCATORS", "PATTERNS", "Allocator", "Upload", "pattern_counts", "sample_layers", "tier_layers"]
