"""The centralized reference: one client holding all training data, the optimizer steps of a whole federated
round per round, every layer -- the yardstick "converged" is measured against. FedIT's code path (strategy
`full`) on a changed experiment."""

from __future__ import annotations

from typing import Any

from fedhello.config import RunConfig, set_dotted
from fedhello.errors import ConfigError
from fedhello.methods.base import Method, register, strategy
from fedhello.methods.fedit import FullAllocator  # noqa: F401  (the strategy it runs: `full`)

CENTRALIZED_LR_FACTOR = 0.5


def _centralized(tree: dict[str, Any], config: RunConfig) -> None:
    """One client holding all training data (an IID partition of one), trained with the optimizer steps of a
    whole federated round per round: the yardstick "converged" is measured against. Same rounds and schedule,
    half the learning rate (below); `clients_per_round x max_steps` steps per round (with epochs instead of a
    step cap, the union of the clients' data is one client's, so the same epochs are the same number of
    samples)."""
    counts = [t.layers for t in config.tiers if t.layers]
    if not counts:
        raise ConfigError("tiers", "the centralized reference needs a tier with layers", "add {share: ..., layers: L}")
    sampled = min(config.federation.clients_per_round, config.federation.num_clients)
    set_dotted(tree, "federation.num_clients", 1)
    set_dotted(tree, "federation.clients_per_round", 1)
    tree["partition"] = {"kind": "iid"}
    tree["tiers"] = [{"share": 1, "layers": max(counts)}]
    if config.train.max_steps:
        steps = sampled * config.train.max_steps
        set_dotted(tree, "train.max_steps", steps)
        set_dotted(tree, "train.local_epochs", max(config.train.local_epochs, steps))  # the step cap decides
    # one model taking a whole round's steps in a row diverges at the federated rate (measured on the bench,
    # 12 rounds x 54 steps at 0.01: 83.6 / 89.0 / 87.9 %; at 0.005: 95.3 %); a yardstick must be well trained
    set_dotted(tree, "train.lr", config.train.lr * CENTRALIZED_LR_FACTOR)


register(
    Method(
        "centralized",
        "centralized reference: one client holding all training data, the optimizer steps of a whole round per "
        "round, every layer",
        strategy("full"),
        adjust=_centralized,
        partition_free=True,
    )
)
