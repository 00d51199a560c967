"""The aggregator interface: a deterministic function from (global state, client updates) to a new global
state, plus what the server needs to know about it.

A subclass implements `aggregate` and may override, each with a default here:

  expected_shapes(plan, global_state, layout)  the tensors, and their shapes, a client with `plan` uploads;
                                               `fedhello.server.validation` refuses anything else.
                                               Default: the plan's keys, LoRA factors truncated to its ranks.
  state_dict() / load_state_dict(state)        what the aggregator carries from round to round (numbers,
                                               lists, dicts, and tensors, which checkpoints keep in safetensors
                                               at their dtype); checkpoints save and restore it. Default: stateless.
  configure(plans)                             what it asks of the round's clients, written into their plans
                                               (e.g. the clip norm of client-side privacy). Default: nothing.
  record()                                     what it adds to the round's line of metrics.jsonl after
                                               aggregating (e.g. the privacy spent). Default: nothing.
  stop_reason()                                why no further round may run (a spent privacy budget), or None.
  notes()                                      sentences for the round's `warnings`, after aggregating (e.g. a
                                               robust rule that could not judge a layer). Default: none.
  from_config(settings)                        (class method) the aggregator as `aggregation:` configures it.
                                               Default: `cls(settings.weighting)`.

An aggregator that ignores sample counts (the robust rules count every client once) sets `weighs_samples = False`;
the config loader then refuses `aggregation.weighting: samples` with it.

An aggregator whose rule is a per-entry mean of the clients' changes sets `averages = True`; it then also merges
`LayerSums` (`apply_sums`): what secure aggregation reveals and what differential privacy noises.
"""

from __future__ import annotations

import typing
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch

from fedhello import components
from fedhello.models.layers import HEAD, keys_for_layers
from fedhello.models.ranks import coverage, lora_factor, pad, truncate
from fedhello.plan import ClientUpdate, Plan, Upload
from fedhello.registry import Registry

if TYPE_CHECKING:
    from fedhello.config import AggregationConfig


def sample_weights(contributors: Sequence[ClientUpdate], weighting: Literal["uniform", "samples"]) -> list[float]:
    """Unnormalised weights of the contributing clients: 1 each (`uniform`), or their sample counts (`samples`)."""
    return [float(u.num_samples) if weighting == "samples" else 1.0 for u in contributors]


def client_weights(contributors: Sequence[ClientUpdate], weighting: Literal["uniform", "samples"]) -> torch.Tensor:
    """Normalised float64 `sample_weights` of the contributing clients (equal when all counts are zero)."""
    weights = torch.tensor(sample_weights(contributors, weighting), dtype=torch.float64)
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


@dataclass
class LayerSums:
    """A round's updates reduced to what an average needs, per tensor of the global state: `sums[name]`, the sum of
    the contributors' changes (upload minus the global value, zero-padded to the global shape, float64), and
    `counts[name]`, per entry, how many contributors' uploads covered it (float64, the same shape). Tensors nobody
    uploaded are absent. Secure aggregation reveals only this; differential privacy adds its noise to it."""

    sums: dict[str, torch.Tensor]
    counts: dict[str, torch.Tensor]


def changes(global_state: dict[str, torch.Tensor], update: ClientUpdate) -> dict[str, torch.Tensor]:
    """The update's change of every tensor it uploads, in float64: upload minus the global value cut to the upload's
    shape (a rank-truncated factor is compared with the global factor's first components)."""
    return {
        name: tensor.to(torch.float64) - global_reference(global_state, name, tensor).to(torch.float64)
        for name, tensor in update.tensors.items()
    }


def global_reference(global_state: dict[str, torch.Tensor], name: str, upload: torch.Tensor) -> torch.Tensor:
    """The global value an upload of `name` is a change of: the whole tensor, or for a rank-truncated LoRA factor
    its first components (A's rows, B's columns)."""
    reference = global_state[name]
    if tuple(upload.shape) == tuple(reference.shape):
        return reference
    return truncate(name, reference, upload.shape[0] if lora_factor(name) == "A" else upload.shape[1])


def layer_sums(
    global_state: dict[str, torch.Tensor],
    updates: Sequence[ClientUpdate],
    deltas: Sequence[dict[str, torch.Tensor]] | None = None,
) -> LayerSums:
    """`LayerSums` of `updates` (uniform weights); `deltas`, one per update, replace their changes (e.g. clipped)."""
    deltas = deltas if deltas is not None else [changes(global_state, u) for u in updates]
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, torch.Tensor] = {}
    for delta in deltas:
        for name, change in delta.items():
            shape = global_state[name].shape
            if name not in sums:
                sums[name] = torch.zeros(shape, dtype=torch.float64)
                counts[name] = torch.zeros(shape, dtype=torch.float64)
            sums[name] += pad(name, change, shape)
            counts[name] += coverage(name, change, shape).to(torch.float64)
    return LayerSums(sums, counts)


def apply_mean(global_state: dict[str, torch.Tensor], reduced: LayerSums) -> dict[str, torch.Tensor]:
    """The global state moved by the mean change of every covered entry (`sums / counts`); the rest unchanged."""
    new_state = {}
    for name, current in global_state.items():
        if name not in reduced.sums:
            new_state[name] = current.clone()
            continue
        counts = reduced.counts[name]
        covered = counts > 0
        out = current.to(torch.float64).clone()
        out[covered] += reduced.sums[name][covered] / counts[covered]
        new_state[name] = out.to(current.dtype)
    return new_state


class Aggregator(ABC):
    """Merges a round's accepted updates into the new global state (see the module docstring for the hooks).
    `weighting` is `aggregation.weighting`: average clients equally or by sample count.

    `accepts` declares which kinds of upload (`Upload`) the rule merges correctly; the config loader refuses
    a strategy whose uploads an aggregator does not accept (`fedhello.config.validate_run`).
    """

    accepts: ClassVar[frozenset[Upload]] = frozenset({Upload.FULL})
    averages: ClassVar[bool] = False  # a per-entry mean of the changes: `apply_sums` works (privacy, secure sums)
    weighs_samples: ClassVar[bool] = True  # `weighting: samples` means something to the rule

    def __init__(self, weighting: Literal["uniform", "samples"] = "uniform") -> None:
        self.weighting = weighting

    @classmethod
    def from_config(cls, settings: AggregationConfig) -> Aggregator:
        """The aggregator as the `aggregation:` section configures it (default: with its weighting only)."""
        return cls(settings.weighting)

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

    def apply_sums(
        self, global_state: dict[str, torch.Tensor], reduced: LayerSums, updates: Sequence[ClientUpdate] = ()
    ) -> dict[str, torch.Tensor]:
        """The new global state from a round's `LayerSums` (uniform weights), for aggregators that average;
        `updates` are the round's updates without their tensors (their metrics), where a wrapper needs them."""
        if not self.averages:
            raise TypeError(f"{type(self).__name__} is not an average of the clients' changes: it cannot merge sums")
        return apply_mean(global_state, reduced)

    def configure(self, plans: dict[int, Plan]) -> dict[int, Plan]:
        """The round's plans with what this aggregator asks of the clients (default: unchanged)."""
        return plans

    def record(self) -> dict[str, Any]:
        """Fields for the round's metrics.jsonl line, after `aggregate` (default: none)."""
        return {}

    def stop_reason(self) -> str | None:
        """Why no further round may run, or None to go on (default: None)."""
        return None

    def notes(self) -> list[str]:
        """What the last `aggregate` could not do as configured, as sentences for the round's `warnings`
        (default: none)."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """State carried across rounds, saved in checkpoints (stateless aggregators: empty)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        return None


AGGREGATORS = typing.cast(Registry[type[Aggregator]], components.AGGREGATORS)  # generic ones here, the rest in methods
