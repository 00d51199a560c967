"""FedIT: every client trains every layer (the homogeneous upper bound; it ignores the tier budgets)."""

from fedhello.allocation import ALLOCATORS, Allocator
from fedhello.methods.base import Method, register, strategy
from fedhello.plan import Plan


@ALLOCATORS.register("full")
class FullAllocator(Allocator):
    """Every client trains every layer (FedIT, the homogeneous upper bound; ignores budgets)."""

    respects_budgets = False

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {cid: Plan(tuple(range(self.num_layers))) for cid in budgets}


register(Method("fedit", "FedIT: every client trains every layer (homogeneous upper bound)", strategy("full")))
