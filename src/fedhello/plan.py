"""The nouns shared by allocation, training, aggregation and the engines."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch


class Upload(StrEnum):
    """The kind of tensors a client sends back. Allocators declare what their plans make clients upload and
    aggregators what they can merge, so an impossible pairing is refused when the config is loaded
    (`fedhello.config.validate_run`) instead of corrupting the global adapter."""

    FULL = "full-rank"  # every trained LoRA factor at the adapter's rank r_max
    TRUNCATED = "rank-truncated"  # the first r < r_max components of each factor (a self-pruned pair: fewer)
    ONE_FACTOR = "one-factor"  # only one factor of each LoRA pair (FFA-LoRA sends B, never A)


PERSONAL_KINDS = ("A", "B", "head")  # what a plan may keep on the client (`Plan.personal`)


@dataclass(frozen=True)
class Plan:
    """What one client trains in one round.

    `layers` are transformer block indices whose LoRA tensors are trained and uploaded; every other LoRA
    tensor is frozen. `ranks` optionally gives a per-layer rank (rank-heterogeneous methods); None means
    the adapter's full rank. `train_head` says whether the task head is trained and uploaded.
    `train_lora_a` / `train_lora_b` = False freeze (and do not upload) that LoRA factor (FFA-LoRA freezes A).
    `recompute` is how many blocks, from the lowest trained layer up, recompute their activations in backward
    instead of keeping them (`fedhello.models.recompute`): memory for time, the same update.
    `personal` names the kinds of trained tensors the client keeps to itself and never uploads (`PERSONAL_KINDS`:
    "A", "B" for a LoRA factor, "head" for the task head): it trains them from its own stored copy
    (`fedhello.training.store`) and the server neither expects nor aggregates them (personalised methods).
    `clip_norm` (client-side differential privacy, `fedhello.privacy`) bounds the L2 norm of the change it uploads.
    """

    layers: tuple[int, ...]
    ranks: dict[int, int] | None = None
    train_head: bool = True
    train_lora_a: bool = True
    train_lora_b: bool = True
    recompute: int = 0
    personal: tuple[str, ...] = ()
    clip_norm: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(sorted(set(int(i) for i in self.layers))))
        object.__setattr__(self, "personal", tuple(sorted(set(self.personal))))
        unknown = set(self.personal) - set(PERSONAL_KINDS)
        if unknown:
            raise ValueError(f"plan: unknown personal part(s) {sorted(unknown)}; known: {list(PERSONAL_KINDS)}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layers": list(self.layers), "train_head": self.train_head}
        if self.ranks is not None:
            out["ranks"] = {str(k): v for k, v in self.ranks.items()}
        for flag, trained in (("train_lora_a", self.train_lora_a), ("train_lora_b", self.train_lora_b)):
            if not trained:
                out[flag] = False
        if self.recompute:
            out["recompute"] = self.recompute
        if self.personal:
            out["personal"] = list(self.personal)
        if self.clip_norm is not None:
            out["clip_norm"] = self.clip_norm
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        ranks = data.get("ranks")
        return cls(
            layers=tuple(data["layers"]),
            ranks={int(k): int(v) for k, v in ranks.items()} if ranks else None,
            train_head=bool(data.get("train_head", True)),
            train_lora_a=bool(data.get("train_lora_a", True)),
            train_lora_b=bool(data.get("train_lora_b", True)),
            recompute=int(data.get("recompute", 0)),
            personal=tuple(str(kind) for kind in data.get("personal", ())),
            clip_norm=float(data["clip_norm"]) if data.get("clip_norm") is not None else None,
        )


# prefix of an update's personalised-evaluation metrics (`federation.local_test`): `local_test.global` and
# `local_test.personal` (the headline metric on the client's local test split), `local_test.samples` (its size)
LOCAL_TEST = "local_test."
GRAD_NORM = "grad_norm."  # prefix of an update's per-layer gradient norms: `grad_norm.<layer>` (Fed-pilot's values)


@dataclass
class ClientUpdate:
    """What a client sends back: tensors for exactly the keys its plan trains, plus bookkeeping."""

    client_id: int
    plan: Plan
    tensors: dict[str, torch.Tensor]
    num_samples: int
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def num_bytes(self) -> int:
        return state_bytes(self.tensors)


def state_bytes(state: dict[str, torch.Tensor]) -> int:
    """Bytes needed to send these tensors as raw arrays."""
    return sum(t.numel() * t.element_size() for t in state.values())
