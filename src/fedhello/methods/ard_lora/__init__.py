"""ARD-LoRA (arXiv 2506.18267) in a federation: every layer at the client's tier rank (its budget), learnable
per-component rank gates trained with the factors under l1 sparsity and total variation over training, folded into
lora_B and pruned before upload (the client sends its effective-rank adapter); the server takes the SVD of the
weighted sum of the clients' B A products (FlexLoRA's aggregation), since pruned components are not aligned
across clients. docs/compare.md, "ARD-LoRA in a federation", lists the interpretations."""

from fedhello.allocation import ALLOCATORS
from fedhello.allocation.rank import TierRankAllocator
from fedhello.methods.ard_lora.client import ARDLoRAClient
from fedhello.methods.ard_lora.options import ARDLoRAOptions
from fedhello.methods.base import Method, register, strategy
from fedhello.methods.flexlora import aggregator as _flexlora  # noqa: F401  (registers "flexlora")


@ALLOCATORS.register("ard_lora")
class ARDLoRAAllocator(TierRankAllocator):
    """Tier ranks (`budget_rank`) as the budget; ARD-LoRA's client side (`ARDLoRAClient`) picks the rank used."""

    Options = ARDLoRAOptions
    client_hook = ARDLoRAClient


register(
    Method(
        "ard-lora",
        "ARD-LoRA: learnable rank gates (l1 + TV) within a tier rank, gates folded and pruned, SVD aggregation",
        strategy("ard_lora", aggregator="flexlora", weighting="samples"),
    )
)
