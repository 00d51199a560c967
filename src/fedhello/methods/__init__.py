"""Methods: Fed-HeLLo and the peer baselines, one folder each (its allocator, aggregator, client hook and
options), registered by importing it. Adding a method: a folder here and one line below (docs/architecture.md).

The registries (`fedhello.components`) import this package the first time they are read, so every built-in
strategy, aggregator and method is known to whoever looks one up.
"""

from fedhello import aggregation  # noqa: F401  (the generic aggregators: fedavg, rank_fedavg)
from fedhello.methods import (  # noqa: F401  (each registers its strategy, aggregator and methods)
    ard_lora,
    centralized,
    exclusive,
    fed_hello,
    fed_pilot,
    fedit,
    fedra,
    fedsa_lora,
    ffa_lora,
    fill,
    flexlora,
    gd,
    hetlora,
    legend,
    pfedlora,
    rgd,
    straggler,
)
from fedhello.methods.base import METHODS, Method, apply_method, method_config, method_overrides

__all__ = ["METHODS", "Method", "apply_method", "method_config", "method_overrides"]
