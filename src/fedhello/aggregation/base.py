"""The aggregator interface: a deterministic function from (global state, client updates) to a new global
state, plus what the server needs to know about it.

A subclass implements `aggregate` and may override, each with a default here:

  expected_shapes(plan, global_state, layout)  the tensors, and their shapes, a client with `plan` uploads;
                                               `fedhello.server.validation` refuses anything else.
                                               Default: the plan's keys, LoRA factors truncated to its ranks.
  state_dict() / load_state_dict(state)        what the aggregator carries from round to round (JSON-able:
                                               numbers, lists, dicts); checkpoints save and restore it.
                                               Default: stateless.
"""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import torch

from fedhello import components
from fedhello.models.layers import HEAD, keys_for_layers
from fedhello.models.ranks import lora_factor
from fedhello.plan import ClientUpdate, Plan, Upload
from fedhello.registry import Registry


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


def expected_shapes(
    plan: Plan, global_state: dict[str, torch.Tensor], layout: dict[str, int]
) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor a client with `plan` must upload.

    Full-rank plans upload the global shapes. A rank-heterogeneous plan (`plan.ranks[layer] = r`) uploads
    LoRA factors truncated to rank r: `lora_A` keeps its first r rows, `lora_B` its first r columns. A
    factor the plan freezes (FFA-LoRA freezes A) is not uploaded, nor a part the client keeps (`plan.personal`).
    """
    frozen = {f for f, train in (("A", plan.train_lora_a), ("B", plan.train_lora_b)) if not train}
    frozen |= set(plan.personal)
    shapes: dict[str, tuple[int, ...]] = {}
    for name in keys_for_layers(layout, plan.layers, plan.train_head):
        factor = lora_factor(name)
        if factor in frozen or (layout[name] == HEAD and "head" in frozen):
            continue
        shape = list(global_state[name].shape)
        layer = layout[name]
        rank = plan.ranks.get(layer) if plan.ranks and layer != HEAD else None
        if rank is not None and len(shape) == 2:
            if factor == "A":
                shape[0] = min(rank, shape[0])
            elif factor == "B":
                shape[1] = min(rank, shape[1])
        shapes[name] = tuple(shape)
    return shapes


class Aggregator(ABC):
    """Merges a round's accepted updates into the new global state (see the module docstring for the hooks).
    `weighting` is `aggregation.weighting`: average clients equally or by sample count.

    `accepts` declares which kinds of upload (`Upload`) the rule merges correctly; the config loader refuses
    a strategy whose uploads an aggregator does not accept (`fedhello.config.validate_run`).
    """

    accepts: ClassVar[frozenset[Upload]] = frozenset({Upload.FULL})

    def __init__(self, weighting: Literal["uniform", "samples"] = "uniform") -> None:
        self.weighting = weighting

    @abstractmethod
    def aggregate(
        self, global_state: dict[str, torch.Tensor], updates: Sequence[ClientUpdate]
    ) -> dict[str, torch.Tensor]:
        """Return the new global state; must not modify its inputs. `updates` come sorted by client id."""

    def expected_shapes(
        self, plan: Plan, global_state: dict[str, torch.Tensor], layout: dict[str, int]
    ) -> dict[str, tuple[int, ...]]:
        """The tensors (name -> shape) a client with `plan` must upload."""
        return expected_shapes(plan, global_state, layout)

    def state_dict(self) -> dict[str, Any]:
        """State carried across rounds, saved in checkpoints (stateless aggregators: empty)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        return None


AGGREGATORS = typing.cast(Registry[type[Aggregator]], components.AGGREGATORS)  # generic ones here, the rest in methods
