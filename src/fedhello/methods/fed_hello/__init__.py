"""Fed-HeLLo: the GD pattern (randomised: RGD) during warm-up, Fisher importance afterwards (the FIM+GD
co-design), and its budget-true variant."""

from pydantic import Field

from fedhello.allocation import ALLOCATORS
from fedhello.methods.base import Method, register, strategy
from fedhello.methods.fim import FisherAllocator, FisherOptions
from fedhello.methods.gd import GeometricAllocator, PatternOptions
from fedhello.methods.rgd import RandomizedGeometricAllocator


class FedHelloOptions(FisherOptions, PatternOptions):
    """FIM-HLA's schedule with a GD/RGD warm-up."""

    randomized: bool = Field(True, description="fim+gd: RGD (True) or deterministic GD (False) during warm-up")


@ALLOCATORS.register("fim+gd")
class FedHelloAllocator(FisherAllocator):
    """Fed-HeLLo co-design: the GD pattern (randomised, RGD, by default) during warm-up, FIM afterwards."""

    Options = FedHelloOptions

    def __init__(self, config, num_layers, tier_budgets, lora_rank=8, constraints=()) -> None:  # noqa: ANN001
        super().__init__(config, num_layers, tier_budgets, lora_rank, constraints)
        pattern_cls = RandomizedGeometricAllocator if config.randomized else GeometricAllocator
        self.fallback = pattern_cls(config, num_layers, tier_budgets, lora_rank, constraints)


register(
    Method(
        "fed-hello",
        "Fed-HeLLo: RGD bottleneck during warm-up, Fisher importance afterwards",
        strategy("fim+gd", pattern="bottleneck", randomized=True),
    )
)
register(
    Method(
        "fed-hello-bt",
        "budget-true Fed-HeLLo: Fed-HeLLo chooses the layers, each plan fitted to its budget by recomputation "
        "(or the fitting set keeping most of them)",
        strategy("fim+gd", pattern="bottleneck", randomized=True, depth_aware=True, recompute=True),
    )
)
