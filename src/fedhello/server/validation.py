"""Server-side checks on client updates before aggregation.

A client is not trusted: its update must carry exactly the tensors its plan trains (the server's plan,
not the one the client claims), with the shapes and dtypes that plan implies, finite values, a sane
sample count, and -- optionally -- a change no larger than `norm_bound` times the round's median. A
rejected update is logged with its reason and never reaches the aggregator, so it cannot change the
global model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedhello.aggregation.base import Aggregator, expected_shapes
from fedhello.config import ReliabilityConfig
from fedhello.plan import ClientUpdate, Plan


@dataclass(frozen=True)
class Rejection:
    """One refused update and why."""

    client_id: int
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"id": self.client_id, "reason": self.reason}


def _slice_like(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The leading block of `tensor` with `shape` (the global part a truncated factor replaces)."""
    return tensor[tuple(slice(0, n) for n in shape)]


class UpdateValidator:
    """Splits a round's updates into accepted and rejected ones (see the module docstring)."""

    def __init__(
        self, layout: dict[str, int], settings: ReliabilityConfig, aggregator: Aggregator | None = None
    ) -> None:
        self.layout = layout
        self.settings = settings
        # the aggregator says what it expects clients to upload (`Aggregator.expected_shapes`)
        self._shapes = aggregator.expected_shapes if aggregator is not None else expected_shapes

    def check_one(self, update: ClientUpdate, plan: Plan | None, global_state: dict[str, torch.Tensor]) -> str | None:
        """Why this update must be refused, or None when it is well-formed."""
        if plan is None:
            return "unsolicited: the client was not sent a plan this round"
        if update.plan != plan:
            return f"plan mismatch: trained layers {list(update.plan.layers)}, the server sent {list(plan.layers)}"
        shapes = self._shapes(plan, global_state, self.layout)
        missing = sorted(set(shapes) - set(update.tensors))
        extra = sorted(set(update.tensors) - set(shapes))
        if extra:
            return f"unexpected keys: {extra[:3]}{' ...' if len(extra) > 3 else ''} ({len(extra)} not in the plan)"
        if missing:
            return f"missing keys: {missing[:3]}{' ...' if len(missing) > 3 else ''} ({len(missing)} of the plan)"
        for name, shape in shapes.items():
            tensor = update.tensors[name]
            if not isinstance(tensor, torch.Tensor):
                return f"{name}: not a tensor ({type(tensor).__name__})"
            if tuple(tensor.shape) != tuple(shape):
                return f"{name}: shape {list(tensor.shape)}, expected {list(shape)}"
            if tensor.dtype != global_state[name].dtype:
                return f"{name}: dtype {tensor.dtype}, expected {global_state[name].dtype}"
            if not bool(torch.isfinite(tensor).all()):
                return f"{name}: contains NaN or Inf"
        samples = update.num_samples
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            return f"num_samples: {samples!r} is not a non-negative integer"
        return None

    def change_rms(self, update: ClientUpdate, global_state: dict[str, torch.Tensor]) -> float:
        """Root-mean-square change of the uploaded values against the global model. Per value, not a
        plain norm, so clients that train more layers are not penalised for it."""
        total, count = 0.0, 0
        for name, tensor in update.tensors.items():
            base = _slice_like(global_state[name], tuple(tensor.shape))
            diff = tensor.detach().to(torch.float64) - base.to(torch.float64)
            total += float((diff * diff).sum())
            count += diff.numel()
        return math.sqrt(total / max(count, 1))

    def split(
        self, plans: dict[int, Plan], updates: Sequence[ClientUpdate], global_state: dict[str, torch.Tensor]
    ) -> tuple[list[ClientUpdate], list[Rejection]]:
        """Accepted updates (in arrival order) and rejections with their reasons."""
        if not self.settings.validate_updates:
            return list(updates), []
        accepted: list[ClientUpdate] = []
        rejected: list[Rejection] = []
        seen: set[int] = set()
        for update in updates:
            if update.client_id in seen:
                rejected.append(Rejection(update.client_id, "duplicate: a second update from this client"))
                continue
            seen.add(update.client_id)
            reason = self.check_one(update, plans.get(update.client_id), global_state)
            if reason is None:
                accepted.append(update)
            else:
                rejected.append(Rejection(update.client_id, reason))
        bound = self.settings.norm_bound
        if bound is not None and len(accepted) >= 3:  # a median of one or two updates says nothing
            changes = [self.change_rms(u, global_state) for u in accepted]
            median = float(np.median(changes))
            kept = []
            for update, change in zip(accepted, changes, strict=True):
                if change > bound * median:
                    reason = f"norm bound: change RMS {change:.3g} > {bound:g} x round median {median:.3g}"
                    rejected.append(Rejection(update.client_id, reason))
                else:
                    kept.append(update)
            accepted = kept
        return accepted, rejected
