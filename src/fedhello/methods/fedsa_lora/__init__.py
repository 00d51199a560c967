"""FedSA-LoRA: every client trains both LoRA factors of every layer; A is shared (masked FedAvg over the clients
that trained it), B stays on the client (its own B, never sent; `Plan.personal`). docs/compare.md, FedSA-LoRA."""

from fedhello.allocation import ALLOCATORS, Allocator
from fedhello.methods.base import Method, register, strategy
from fedhello.plan import Plan, Upload


@ALLOCATORS.register("fedsa")
class SharedAAllocator(Allocator):
    """Every client trains every layer's A and B and the head; it sends A and the head and keeps its own B, which
    it starts from in its next round (the shared initial B, zero, the first time). The global adapter's B is never
    changed, so the global model alone is the base model plus the head: FedSA-LoRA's model is personal (A shared,
    B own), scored by personalised evaluation. Homogeneous, like FedIT: it ignores the tier budgets."""

    uploads = frozenset({Upload.ONE_FACTOR})
    respects_budgets = False

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {cid: Plan(tuple(range(self.num_layers)), personal=("B",)) for cid in budgets}


register(
    Method(
        "fedsa-lora",
        "FedSA-LoRA: all layers; A shared (masked FedAvg), each client's B kept personal and never sent",
        strategy("fedsa"),
    )
)
