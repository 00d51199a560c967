"""GD-HLA: a fixed layer set per tier budget, given by a geometric pattern (bottleneck, triangle, inverted
triangle, uniform; `fedhello.patterns`)."""

from typing import Literal

from pydantic import Field

from fedhello.allocation import ALLOCATORS, Allocator
from fedhello.config import StrategyConfig
from fedhello.methods.base import Method, register, strategy
from fedhello.patterns import tier_layers
from fedhello.plan import Plan


class PatternOptions(StrategyConfig):
    """A strategy whose layers follow a GD pattern."""

    pattern: Literal["bottleneck", "triangle", "inverted_triangle", "uniform"] = Field(
        "bottleneck",
        description="GD layer pattern (gd, rgd, fim+gd warm-up): which layers a tier of k layers trains, e.g. "
        "bottleneck = both ends first (README, The method)",
    )


@ALLOCATORS.register("gd")
class GeometricAllocator(Allocator):
    """GD-HLA: a fixed layer set per budget, given by the configured geometric pattern."""

    Options = PatternOptions

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        pattern = self.config.pattern
        return {cid: Plan(tier_layers(pattern, self.num_layers, k)) for cid, k in budgets.items()}


for _pattern in ("bottleneck", "triangle", "inverted_triangle", "uniform"):
    register(
        Method(
            f"gd-{_pattern}", f"GD-HLA, {_pattern} pattern (fixed layers per tier)", strategy("gd", pattern=_pattern)
        )
    )
