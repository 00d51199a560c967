"""LEGEND: the k layers nearest the output, ranks rising with depth; rank-masked FedAvg."""

import math

from fedhello.allocation import ALLOCATORS
from fedhello.allocation.rank import RankAllocator
from fedhello.methods.base import Method, register, strategy
from fedhello.plan import Plan


def depth_ranks(lora_rank: int, num_layers: int) -> dict[int, int]:
    """LEGEND's rank profile: ranks rising linearly with depth, r_max at the output layer."""
    return {i: max(1, math.ceil(lora_rank * (i + 1) / num_layers)) for i in range(num_layers)}


@ALLOCATORS.register("legend")
class LegendAllocator(RankAllocator):
    """LEGEND: a client with budget k tunes the k layers nearest the output; layer i has rank
    ceil(r_max * (i + 1) / L) for every client (`depth_ranks`), so deeper layers get more rank."""

    def allocate(self, round_num, budgets, rng):  # noqa: ANN001
        ranks = depth_ranks(self.lora_rank, self.num_layers)
        plans = {}
        for cid, k in budgets.items():
            layers = tuple(range(self.num_layers - k, self.num_layers))
            plans[cid] = Plan(layers, ranks={i: ranks[i] for i in layers})
        return plans


register(
    Method(
        "legend",
        "LEGEND: the k layers nearest the output, ranks rising with depth",
        strategy("legend", aggregator="rank_fedavg"),
    )
)
