"""The aggregator interface: a pure function from (global state, client updates) to a new global state."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Literal

import torch

from fedhello.plan import ClientUpdate
from fedhello.registry import Registry

AGGREGATORS: Registry = Registry("aggregator")


class Aggregator(ABC):
    def __init__(self, weighting: Literal["uniform", "samples"] = "uniform") -> None:
        self.weighting = weighting

    @abstractmethod
    def aggregate(
        self, global_state: dict[str, torch.Tensor], updates: Sequence[ClientUpdate]
    ) -> dict[str, torch.Tensor]:
        """Return the new global state; must not modify its inputs."""
