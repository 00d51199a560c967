"""FFA-LoRA: A frozen at the shared initialisation, only B trained and sent."""

from fedhello.allocation import ALLOCATORS, Allocator
from fedhello.methods.base import Method, register, strategy
from fedhello.plan import Plan, Upload


@ALLOCATORS.register("ffa")
class FrozenAAllocator(Allocator):
    """FFA-LoRA: every client trains every layer's B only; A stays at the shared seeded initialisation and
    is never sent (half the upload). As published, FFA-LoRA is a homogeneous method: every client trains the
    whole model whatever its tier budget (like FedIT), so it is an upper bound on resources, not a
    budget-respecting baseline; `respects_budgets = False` makes the CLI say so at the start of a run."""

    uploads = frozenset({Upload.ONE_FACTOR})
    respects_budgets = False

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {cid: Plan(tuple(range(self.num_layers)), train_lora_a=False) for cid in budgets}


register(Method("ffa-lora", "FFA-LoRA: A frozen at the shared init, only B trained and sent", strategy("ffa")))
