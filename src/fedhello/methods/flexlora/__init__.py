"""FlexLoRA: every layer at a tier rank (`tier_rank`); the server takes the SVD of the sample-weighted sum of the
clients' B A products."""

from fedhello.allocation import ALLOCATORS
from fedhello.allocation.rank import TierRankAllocator
from fedhello.methods.base import Method, register, strategy
from fedhello.methods.flexlora.aggregator import FlexLoRAAggregator  # noqa: F401  (registers "flexlora")

ALLOCATORS.add("tier_rank", TierRankAllocator)

register(
    Method(
        "flexlora",
        "FlexLoRA: all layers at a tier rank, SVD of the sample-weighted sum of B A products",
        strategy("tier_rank", aggregator="flexlora", weighting="samples"),
    )
)
