"""pFedLoRA (arXiv 2310.13283) on one shared foundation model: each client's task head is its personal "local
model" (kept, never sent), the LoRA adapter on every layer the shared "homogeneous small adapter" (masked FedAvg);
a client trains them in alternation (`PFedLoRAClient`). Interpretations: docs/compare.md, pFedLoRA."""

from fedhello.allocation import ALLOCATORS, Allocator
from fedhello.methods.base import Method, register, strategy
from fedhello.methods.pfedlora.client import PFedLoRAClient
from fedhello.methods.pfedlora.options import PFedLoRAOptions
from fedhello.plan import Plan


@ALLOCATORS.register("pfedlora")
class PFedLoRAAllocator(Allocator):
    """Every client trains every layer's LoRA (shared, sent) and the head (personal, kept). Homogeneous, like
    FedIT: it ignores the tier budgets. The global model's head stays at its initialisation (nobody sends one), so
    only personalised evaluation scores the method."""

    Options = PFedLoRAOptions
    client_hook = PFedLoRAClient
    respects_budgets = False

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {cid: Plan(tuple(range(self.num_layers)), personal=("head",)) for cid in budgets}


register(
    Method(
        "pfedlora",
        "pFedLoRA: each client's head personal (never sent), trained in alternation with the shared LoRA (FedAvg)",
        strategy("pfedlora"),
    )
)
