"""The aggregator interface: a pure function from (global state, client updates) to a new global state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch

from fedhello.allocation.base import Upload
from fedhello.plan import ClientUpdate
from fedhello.registry import Registry

AGGREGATORS: Registry = Registry("aggregator")


def client_weights(contributors: Sequence[ClientUpdate], weighting: Literal["uniform", "samples"]) -> torch.Tensor:
    """Normalised float64 weights of the contributing clients: equal, or by sample count (equal when all
    counts are zero)."""
    weights = torch.tensor(
        [float(u.num_samples) if weighting == "samples" else 1.0 for u in contributors], dtype=torch.float64
    )
    if weights.sum() <= 0:
        weights = torch.ones_like(weights)
    return weights / weights.sum()


def weighted_mean(tensors: Sequence[torch.Tensor], weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum of `weights[i] * tensors[i]`, computed in float64 and returned in `like`'s dtype."""
    stacked = torch.stack([t.to(torch.float64) for t in tensors])
    return (stacked * weights.view(-1, *([1] * like.dim()))).sum(0).to(like.dtype)


class Aggregator(ABC):
    """Merges a round's accepted updates into the global state.

    `accepts` declares which kinds of upload (`Upload`) the rule merges correctly; the config loader refuses
    a strategy whose uploads an aggregator does not accept (see `fedhello.methods.compatibility`).
    """

    accepts: ClassVar[frozenset[Upload]] = frozenset({Upload.FULL})

    def __init__(self, weighting: Literal["uniform", "samples"] = "uniform") -> None:
        self.weighting = weighting

    @abstractmethod
    def aggregate(
        self, global_state: dict[str, torch.Tensor], updates: Sequence[ClientUpdate]
    ) -> dict[str, torch.Tensor]:
        """Return the new global state; must not modify its inputs."""
