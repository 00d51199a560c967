"""The server side of differential privacy: a wrapper around an averaging aggregator (as Flower's DP strategies wrap
a strategy), and the client side: clipping (and, in local mode, noising) the change a client uploads.

Per-layer calibration. An averaging aggregator's new value of a tensor entry is the global value plus the sum of the
contributors' changes over their count m_e (`LayerSums`). Every client's whole change is clipped to C, so adding or
replacing one client moves the vector of all sums by at most C (2C); noise N(0, (zC)^2) on every entry of every
sum makes the release one Gaussian mechanism with noise multiplier z, whichever clients trained which layer. On the
mean that is zC / m_e: a layer two clients trained gets three times the noise of one six clients trained. (Flower's
wrappers add zC / m for m sampled clients to every entry, too little by m / m_e where fewer clients trained it.)

Modes (`privacy.mode`): `server` clips on the server; `client` has the clients clip (their plan carries the clip
norm) and the server add the noise, so it composes with secure aggregation, which shows the server only the sums;
`local` has each client add N(0, (zC)^2) to its own clipped upload: no one is trusted, and the mean of m_e such
uploads carries zC / sqrt(m_e) -- sqrt(m_e) times the server's noise.

Adaptive clipping (Andrew et al. 2021, as Flower's `DifferentialPrivacy*AdaptiveClipping`): the share of clients
whose change fitted the norm, noised with `clipped_count_stddev`, moves C geometrically toward
`target_quantile`; the change's noise multiplier is raised so the pair of releases still has multiplier z.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedhello.accounting import epsilon_after
from fedhello.aggregation.base import Aggregator, LayerSums, changes, global_reference, layer_sums
from fedhello.config import PrivacyConfig
from fedhello.errors import ConfigError
from fedhello.plan import ClientUpdate, Plan
from fedhello.privacy.clipping import clip_change

UNCLIPPED = "dp.unclipped"  # an update's metric in client mode: 1.0 when its change fitted the clip norm
_NOISE_STREAM = 8  # seeds the server's noise: (seed, stream, released round)


def count_stddev(settings: PrivacyConfig, per_round: int) -> float:
    """The noise on the count of unclipped clients (adaptive clipping): as set, else clients per round / 20."""
    return settings.clipped_count_stddev if settings.clipped_count_stddev is not None else per_round / 20


def update_noise_multiplier(settings: PrivacyConfig, per_round: int) -> float:
    """The noise multiplier of the changes' sums: z, or with adaptive clipping the z_d for which the changes
    (z_d) and the count (noise s) together have multiplier z: z_d = (z^-2 - (2s)^-2)^(-1/2)."""
    z = settings.noise_multiplier
    if not settings.adaptive_clip or z == 0:
        return z
    s = count_stddev(settings, per_round)
    if z >= 2 * s:
        raise ConfigError(
            "privacy.clipped_count_stddev",
            f"{s:g} is too small for noise_multiplier {z:g} with adaptive_clip (it must exceed z / 2)",
            f"set it above {z / 2:g}, or lower privacy.noise_multiplier",
        )
    return (z**-2 - (2 * s) ** -2) ** -0.5


class PrivateAggregator(Aggregator):
    """Wraps an averaging aggregator (`Aggregator.averages`): clips (server mode), noises every entry of the round's
    per-tensor sums with std z_d * C (server and client modes), merges them with the inner rule, accounts the
    epsilon, adapts the clip norm, and asks the run to stop before a round that would pass `max_epsilon`."""

    averages = True

    def __init__(self, inner: Aggregator, settings: PrivacyConfig, seed: int, num_clients: int, per_round: int) -> None:
        super().__init__("uniform")
        self.inner = inner
        self.accepts = inner.accepts  # type: ignore[misc]  (per instance: the inner rule's)
        self.settings = settings
        self.seed = seed
        self.num_clients = num_clients
        self.per_round = per_round
        self.noise_multiplier = update_noise_multiplier(settings, per_round)
        self.clip_norm = settings.clip_norm
        self.released = 0  # rounds whose aggregate was released (a skipped round spends nothing)
        self.last: dict[str, Any] = {}

    # --- the round ---------------------------------------------------------------------------------
    def configure(self, plans: dict[int, Plan]) -> dict[int, Plan]:
        plans = self.inner.configure(plans)
        if self.settings.mode == "server":
            return plans
        return {cid: dataclasses.replace(plan, clip_norm=self.clip_norm) for cid, plan in plans.items()}

    def expected_shapes(self, plan, global_state, layout):  # noqa: ANN001
        return self.inner.expected_shapes(plan, global_state, layout)

    def aggregate(self, global_state, updates):  # noqa: ANN001
        deltas = [changes(global_state, u) for u in updates]
        norms = None
        if self.settings.mode == "server":
            clipped = [clip_change(d, self.clip_norm) for d in deltas]
            deltas = [d for d, _ in clipped]
            norms = [norm for _, norm in clipped]
            fitted = [norm <= self.clip_norm for norm in norms]
        else:  # the clients clipped (and in local mode noised) their changes
            fitted = [u.metrics.get(UNCLIPPED, 1.0) >= 0.5 for u in updates]
        new_state = self._release(global_state, layer_sums(global_state, updates, deltas), fitted)
        if norms:  # the trusted server saw them anyway: what a clip norm cuts, for choosing one
            self.last["change_norm_median"] = float(np.median(norms))
        return new_state

    def apply_sums(self, global_state, reduced, updates: Sequence[ClientUpdate] = ()):  # noqa: ANN001
        """Sums from secure aggregation (client or local mode): the clients clipped; noise, merge, account."""
        fitted = [u.metrics.get(UNCLIPPED, 1.0) >= 0.5 for u in updates]
        return self._release(global_state, reduced, fitted)

    def _release(self, global_state: dict[str, torch.Tensor], reduced: LayerSums, fitted: list[bool]):  # noqa: ANN202
        clip_used = self.clip_norm
        std = self.noise_multiplier * clip_used if self.settings.mode != "local" else 0.0
        generator = torch.Generator().manual_seed(self._noise_seed())
        noised = {}
        for name in sorted(reduced.sums):
            total = reduced.sums[name]
            noise = torch.randn(total.shape, generator=generator, dtype=torch.float64) * std
            noised[name] = total + noise * (reduced.counts[name] > 0)
        new_state = self.inner.apply_sums(global_state, LayerSums(noised, reduced.counts))
        self.released += 1
        fraction = None
        if self.settings.adaptive_clip and fitted:
            rng = np.random.default_rng([self.seed, _NOISE_STREAM, self.released, 1])
            stddev = count_stddev(self.settings, self.per_round)
            fraction = float(rng.normal(sum(fitted), stddev)) / len(fitted)
            self.clip_norm *= math.exp(-self.settings.clip_lr * (fraction - self.settings.target_quantile))
        self.last = {
            "epsilon": self.epsilon(self.released),
            "delta": self.settings.delta,
            "clip_norm": clip_used,
            "noise_std": std,
            "unclipped": sum(fitted) / len(fitted) if fitted else None,
            **({"unclipped_noised": fraction} if fraction is not None else {}),
        }
        return new_state

    def _noise_seed(self) -> int:
        return int(np.random.SeedSequence([self.seed, _NOISE_STREAM, self.released]).generate_state(1)[0])

    # --- accounting --------------------------------------------------------------------------------
    def epsilon(self, rounds: int) -> float:
        """Epsilon at the configured delta after `rounds` released rounds."""
        return epsilon_after(
            rounds, self.settings.noise_multiplier, self.num_clients, self.per_round, self.settings.delta
        )

    def record(self) -> dict[str, Any]:
        return {**self.inner.record(), "privacy": dict(self.last)} if self.last else self.inner.record()

    def stop_reason(self) -> str | None:
        budget = self.settings.max_epsilon
        if budget is not None and self.epsilon(self.released + 1) > budget:
            return (
                f"privacy budget: another round would spend epsilon {self.epsilon(self.released + 1):.3g} "
                f"> privacy.max_epsilon {budget:g} (spent {self.epsilon(self.released):.3g})"
            )
        return self.inner.stop_reason()

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "clip_norm": self.clip_norm, "released": self.released}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state.get("inner") or {})
        self.clip_norm = float(state["clip_norm"])
        self.released = int(state["released"])


def privatize_upload(
    tensors: dict[str, torch.Tensor],
    global_state: dict[str, torch.Tensor],
    plan: Plan,
    settings: PrivacyConfig,
    seed: int,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """The client side (`plan.clip_norm` set: client and local modes): the upload with its change clipped to the
    plan's norm and, in local mode, N(0, (zC)^2) added to every entry; plus, for adaptive clipping, the
    `dp.unclipped` metric (one bit that leaves the client in the clear, as with Flower's adaptive wrappers)."""
    if plan.clip_norm is None:
        return tensors, {}
    base = {n: global_reference(global_state, n, t) for n, t in tensors.items()}
    change = {n: t.to(torch.float64) - base[n].to(torch.float64) for n, t in tensors.items()}
    clipped, norm = clip_change(change, plan.clip_norm)
    if settings.mode == "local":
        generator = torch.Generator().manual_seed(seed + 1)  # not the training stream
        std = settings.noise_multiplier * plan.clip_norm
        clipped = {
            n: c + torch.randn(c.shape, generator=generator, dtype=torch.float64) * std
            for n, c in sorted(clipped.items())
        }
    out = {n: (base[n].to(torch.float64) + clipped[n]).to(t.dtype) for n, t in tensors.items()}
    return out, ({UNCLIPPED: float(norm <= plan.clip_norm)} if settings.adaptive_clip else {})
