"""RGD-HLA: each client draws its k layers with the GD pattern's collective per-layer counts as odds."""

from fedhello.allocation import ALLOCATORS, Allocator, sample_layers
from fedhello.methods.base import Method, register, strategy
from fedhello.methods.gd import PatternOptions
from fedhello.patterns import pattern_counts
from fedhello.plan import Plan


@ALLOCATORS.register("rgd")
class RandomizedGeometricAllocator(Allocator):
    """RGD-HLA: each client draws its k layers with probabilities proportional to the pattern's
    collective per-layer counts."""

    Options = PatternOptions

    def __init__(self, config, num_layers, tier_budgets, lora_rank=8, constraints=()) -> None:  # noqa: ANN001
        super().__init__(config, num_layers, tier_budgets, lora_rank, constraints)
        self.counts = pattern_counts(config.pattern, num_layers, tier_budgets)

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        return {cid: Plan(sample_layers(rng, self.counts, k)) for cid, k in budgets.items()}


register(
    Method("rgd", "RGD-HLA: layers drawn with the bottleneck counts as odds", strategy("rgd", pattern="bottleneck"))
)
