"""HetLoRA: every layer at a tier rank scaled alpha / r, rank self-pruning on the client, a zero-padded
norm-weighted average on the server."""

from fedhello.allocation import ALLOCATORS
from fedhello.allocation.rank import TierRankAllocator
from fedhello.methods.base import Method, register, strategy
from fedhello.methods.hetlora.aggregator import HetLoRAAggregator  # noqa: F401  (registers "hetlora")
from fedhello.methods.hetlora.client import HetLoRAClient
from fedhello.methods.hetlora.options import PRUNE_THRESHOLD, HetLoRAOptions


@ALLOCATORS.register("hetlora")
class HetLoRAAllocator(TierRankAllocator):
    """Tier ranks (`tier_rank`), with HetLoRA's client side (per-rank scaling, self-pruning)."""

    Options = HetLoRAOptions
    client_hook = HetLoRAClient


register(
    Method(
        "hetlora",
        "HetLoRA: all layers at a tier rank scaled alpha/r, rank self-pruning, zero-padded norm-weighted average",
        # the published method: each client a rank-r_k adapter scaled alpha / r_k, pruning its own rank
        strategy("hetlora", aggregator="hetlora", rank_scaling="per_rank", self_prune_threshold=PRUNE_THRESHOLD),
    )
)
