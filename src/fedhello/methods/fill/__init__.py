"""budget-fill: every client trains all the layers its budget affords, from the output down (with `recompute`, the
most layers that fit when some blocks recompute their activations); masked FedAvg."""

from fedhello.allocation import ALLOCATORS
from fedhello.allocation.constraints import KnapsackAllocator
from fedhello.methods.base import Method, register, strategy


@ALLOCATORS.register("fill")
class FillAllocator(KnapsackAllocator):
    """Every client trains all the layers its budget affords, from the output down (all layers are worth the
    same). Under memory budgets this is also what a value-maximising knapsack picks when every layer has the
    same value; for a count-only tier, its top k layers."""


register(
    Method(
        "fill",
        "budget-fill: every client trains all the layers its budget affords, from the output down; masked FedAvg",
        strategy("fill"),
    )
)
register(
    Method(
        "fill-rc",
        "budget-fill with recomputation: the most layers, deepest first, that a budget affords when some blocks "
        "recompute their activations (fewest blocks that fit); masked FedAvg",
        strategy("fill", recompute=True),
    )
)
