"""Server-side checks on client updates before aggregation.

A client is not trusted: its update must carry exactly the tensors its plan trains (the server's plan,
not the one the client claims), with the shapes and dtypes that plan implies (where clients self-prune their
rank, a LoRA pair may come at a lower rank, both factors alike), finite values, and a
sample count the server can vouch for. Where the server knows each client's partition size (the local
and flower-sim engines build the federation's partitioner) the claim must equal it; elsewhere
(flower-deploy) it must stay within `max_num_samples` and `num_samples_bound` times the round's median
claim. Optionally the change must be no larger than `norm_bound` times the round's median change.

The two median rules judge a round, not one reply: `bound` is handed every well-formed update of the
round so far (all attempts), so an outlier cannot slip through on a retry where only one or two updates
arrive. A rejected update is logged with its reason and never reaches the aggregator, so it cannot
change the global model, and the aggregator only ever sees sample counts the server trusts.

Updates that claim no samples (a node with empty data) trained nothing and carry no weight
(`Coordinator.aggregate`), so they neither set the medians nor are judged by them: with most of a round at 0
samples, a median over every claim would be 0 and refuse every honest update. The medians are taken over the
updates that claim samples (and, for the norm rule, that changed the model), and need at least `MIN_JUDGED` of
them: a median of one or two values bounds nothing. A round where a rule in force could not judge is said in
the run's records (`unbounded`).

Engines do not judge updates: they only move them (see engines/flower/serverapp.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedhello.aggregation.base import Aggregator, expected_shapes
from fedhello.config import ReliabilityConfig
from fedhello.models.ranks import lora_factor, partner_name, tensor_rank
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


MIN_JUDGED = 3  # fewest values a round median is taken over (one or two bound nothing)

SampleCounts = Callable[[int], int]
"""client id -> the number of training samples the server knows that client holds."""


class UpdateValidator:
    """Splits a round's updates into accepted and rejected ones (see the module docstring).

    `sample_counts` is the server's own count of each client's training samples, where it has one (the
    simulation engines); without it, claims are only bounded (`max_num_samples`, `num_samples_bound`).
    `pruned_ranks` (clients may self-prune, `StrategyConfig.sends_lower_ranks`): a LoRA pair may arrive at a lower rank
    than the plan's, both factors at the same rank -- the rank-k adapter a self-pruned client sends.
    """

    def __init__(
        self,
        layout: dict[str, int],
        settings: ReliabilityConfig,
        aggregator: Aggregator | None = None,
        sample_counts: SampleCounts | None = None,
        pruned_ranks: bool = False,
    ) -> None:
        self.layout = layout
        self.settings = settings
        self.sample_counts = sample_counts
        self.pruned_ranks = pruned_ranks
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
            if tuple(tensor.shape) != tuple(shape) and not self._pruned(name, tensor, shape):
                return f"{name}: shape {list(tensor.shape)}, expected {list(shape)}"
            if tensor.dtype != global_state[name].dtype:
                return f"{name}: dtype {tensor.dtype}, expected {global_state[name].dtype}"
            if not bool(torch.isfinite(tensor).all()):
                return f"{name}: contains NaN or Inf"
        if self.pruned_ranks:
            for name, tensor in update.tensors.items():
                partner = update.tensors.get(partner_name(name)) if lora_factor(name) == "A" else None
                if partner is not None and tensor_rank(name, tensor) != tensor_rank(partner_name(name), partner):
                    return f"{name}: rank {tensor_rank(name, tensor)}, its lora_B has rank {partner.shape[1]}"
        return self.check_samples(update.num_samples, update.client_id)

    def _pruned(self, name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> bool:
        """Whether `tensor` is LoRA factor `name` at a lower rank (at least 1) than `shape`, every other
        dimension as planned, and self-pruned ranks are allowed."""
        factor = lora_factor(name)
        if not self.pruned_ranks or factor is None or tensor.dim() != 2 or len(shape) != 2:
            return False
        axis = 0 if factor == "A" else 1
        rank, planned = tensor.shape[axis], shape[axis]
        return 1 <= rank < planned and tensor.shape[1 - axis] == shape[1 - axis]

    def check_samples(self, samples: object, client_id: int) -> str | None:
        """Why a claimed sample count must be refused on its own (the median rule is in `bound`)."""
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 0:
            return f"num_samples: {samples!r} is not a non-negative integer"
        if self.sample_counts is not None:
            # the server holds the partition: a different claim is a lie (or a broken client), and it
            # would buy the client a larger share of a samples-weighted average
            known = self.sample_counts(client_id)
            if samples != known:
                return f"num_samples: claims {samples}, the server's partition of this client holds {known}"
            return None
        cap = self.settings.max_num_samples
        if cap is not None and samples > cap:
            return f"num_samples: claims {samples}, more than max_num_samples {cap}"
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

    def screen(
        self,
        plans: dict[int, Plan],
        updates: Sequence[ClientUpdate],
        global_state: dict[str, torch.Tensor],
        seen: set[int] | None = None,
    ) -> tuple[list[ClientUpdate], list[Rejection]]:
        """The well-formed updates of one attempt (arrival order) and the rejected ones with their reasons.

        `seen` holds the clients already heard from in this round (updated in place), so a second update
        from a client is refused even when it comes in a later attempt.
        """
        if not self.settings.validate_updates:
            return list(updates), []
        seen = set() if seen is None else seen
        wellformed: list[ClientUpdate] = []
        rejected: list[Rejection] = []
        for update in updates:
            if update.client_id in seen:
                rejected.append(Rejection(update.client_id, "duplicate: a second update from this client"))
                continue
            seen.add(update.client_id)
            reason = self.check_one(update, plans.get(update.client_id), global_state)
            if reason is None:
                wellformed.append(update)
            else:
                rejected.append(Rejection(update.client_id, reason))
        return wellformed, rejected

    def _judges_claims(self) -> bool:
        return self.settings.num_samples_bound is not None and self.sample_counts is None

    def _moved(self, updates: Sequence[ClientUpdate], global_state: dict[str, torch.Tensor]) -> dict[int, float]:
        """Change RMS of the updates that claim samples and changed the model, by position in `updates`."""
        changes = {i: self.change_rms(u, global_state) for i, u in enumerate(updates) if u.num_samples > 0}
        return {i: change for i, change in changes.items() if change > 0}

    def bound(
        self, updates: Sequence[ClientUpdate], global_state: dict[str, torch.Tensor]
    ) -> tuple[list[ClientUpdate], list[Rejection]]:
        """The round-level rules: `updates` are ALL the round's well-formed updates so far; an update is
        refused when its change RMS exceeds `norm_bound` x the median over the updates that claim samples and
        changed the model, or (without server-side sample counts) its claim exceeds `num_samples_bound` x the
        median of the positive claims. A rule judges only with at least `MIN_JUDGED` such values. Pure:
        judging the same round again with more updates may refuse one that an earlier call kept."""
        if not self.settings.validate_updates:
            return list(updates), []
        reasons: dict[int, str] = {}  # position in `updates` -> why
        bound = self.settings.norm_bound
        if bound is not None:
            changes = self._moved(updates, global_state)
            if len(changes) >= MIN_JUDGED:
                median = float(np.median(list(changes.values())))
                for i, change in changes.items():
                    if change > bound * median:
                        reasons[i] = f"norm bound: change RMS {change:.3g} > {bound:g} x round median {median:.3g}"
        samples_bound = self.settings.num_samples_bound
        claims = {i: u.num_samples for i, u in enumerate(updates) if u.num_samples > 0}
        if self._judges_claims() and samples_bound is not None and len(claims) >= MIN_JUDGED:
            median = float(np.median(list(claims.values())))
            for i, claim in claims.items():
                if i not in reasons and claim > samples_bound * median:
                    reasons[i] = f"num_samples: claims {claim} > {samples_bound:g} x round median {median:g}"
        kept = [u for i, u in enumerate(updates) if i not in reasons]
        return kept, [Rejection(updates[i].client_id, why) for i, why in sorted(reasons.items())]

    def unbounded(self, updates: Sequence[ClientUpdate], global_state: dict[str, torch.Tensor]) -> list[str]:
        """The median rules in force that could not judge this round's `updates` (too few values), each as a
        sentence for the run's records: there, a claim or a change is bounded by nothing else."""
        if not self.settings.validate_updates:
            return []
        notes = []
        claims = sum(1 for u in updates if u.num_samples > 0)
        if self._judges_claims() and claims < MIN_JUDGED:
            cap = self.settings.max_num_samples
            notes.append(
                f"num_samples_bound not applied: {claims} update(s) claim samples and a round median needs "
                f"{MIN_JUDGED}; claims were bounded only by reliability.max_num_samples ({cap if cap else 'unset'})"
            )
        if self.settings.norm_bound is not None:
            moved = len(self._moved(updates, global_state))
            if moved < MIN_JUDGED:
                notes.append(
                    f"norm_bound not applied: {moved} update(s) with samples changed the model and a round median "
                    f"needs {MIN_JUDGED}"
                )
        return notes

    def split(
        self, plans: dict[int, Plan], updates: Sequence[ClientUpdate], global_state: dict[str, torch.Tensor]
    ) -> tuple[list[ClientUpdate], list[Rejection]]:
        """Judge a whole round at once: accepted updates (in arrival order) and rejections with reasons."""
        wellformed, rejected = self.screen(plans, updates, global_state)
        accepted, outliers = self.bound(wellformed, global_state)
        return accepted, rejected + outliers
