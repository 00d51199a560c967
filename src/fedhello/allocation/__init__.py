"""Heterogeneous LoRA allocation: the `Allocator` base and the shared machinery of allocators (importance from the
empirical Fisher, the exact layer knapsack, budget fitting, rank tiers). The strategies themselves live in their
method folders (`fedhello.methods`), which register them in `ALLOCATORS`."""

from fedhello.allocation.base import ALLOCATORS, Allocator, sample_layers
from fedhello.plan import Upload

__all__ = ["ALLOCATORS", "Allocator", "Upload", "sample_layers"]
