"""Fed-pilot: a per-client knapsack over layers under the memory budget with gradient-norm values, and a
compensating aggregation; and its variant whose knapsack may recompute activations."""

from fedhello.methods.base import Method, register, strategy
from fedhello.methods.fed_pilot.aggregator import FedPilotAggregator  # noqa: F401  (registers "fedpilot")
from fedhello.methods.fed_pilot.allocator import FedPilotAllocator  # noqa: F401  (registers "fedpilot")

register(
    Method(
        "fed-pilot",
        "Fed-pilot: per-client knapsack over layers under the memory budget, gradient-norm values, "
        "compensating aggregation",
        strategy("fedpilot", aggregator="fedpilot", weighting="samples"),
    )
)
register(
    Method(
        "fed-pilot-rc",
        "Fed-pilot whose knapsack may recompute activations to fit deeper layer sets",
        strategy("fedpilot", aggregator="fedpilot", weighting="samples", recompute=True),
    )
)
