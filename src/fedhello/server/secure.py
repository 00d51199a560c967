"""Secure aggregation in the round loop (`secure.enabled`): what every engine's secure dispatch shares.

A secure dispatch (`server.loop.SecureDispatch`) returns the round's updates without tensors and the per-tensor sums
that `fedhello.secure.secure_sum` released (`LayerSums`). Which tensors a client uploads and their shapes come from
the server's own plans (`Aggregator.expected_shapes`), never from the clients. The clients' stochastic rounding is
seeded from their training seed, so a secure run is as reproducible as a plain one: the masks are fresh randomness
every round, but they cancel exactly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from fedhello.aggregation.base import LayerSums, changes
from fedhello.config import RunConfig
from fedhello.plan import ClientUpdate, Plan
from fedhello.secure import InProcessExchange, SecureAggregationError, SecureResult, SecureSettings, secure_sum
from fedhello.secure.transport import LocalClient
from fedhello.seeding import client_seed

Uploads = Callable[[Plan], dict[str, tuple[int, ...]]]  # a plan -> the tensors (name -> shape) its client uploads
ROUNDING_STREAM = 11  # a client's stochastic rounding: (its training seed, this stream)
BYTES_UP, BYTES_DOWN = "secure_bytes_up", "secure_bytes_down"  # an update's metrics: its protocol traffic


def secure_settings(config: RunConfig) -> SecureSettings:
    """The protocol's settings from the config's `secure` section."""
    return SecureSettings(
        bits=config.secure.bits,
        clip_range=config.secure.clip_range,
        threshold=config.secure.threshold,
        min_contributors=config.secure.min_contributors,
    )


def rounding_rng(seed: int) -> np.random.Generator:
    """The generator of a client's stochastic rounding, from its training seed of the round (`client_seed`)."""
    return np.random.default_rng([seed, ROUNDING_STREAM])


def round_tensors(plans: dict[int, Plan], uploads: Uploads) -> tuple[dict[str, list[int]], dict[str, tuple[int, ...]]]:
    """`tensor_members` and `shapes` of a round: per tensor, the clients whose plan uploads it, and its shape."""
    members: dict[str, list[int]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for client, plan in sorted(plans.items()):
        for name, shape in uploads(plan).items():
            members.setdefault(name, []).append(client)
            shapes[name] = tuple(shape)
    return members, shapes


def layer_sums(result: SecureResult) -> LayerSums:
    """The released sums as `LayerSums`: every contributor uploads the whole tensor, so each entry's count is the
    number of contributors."""
    counts = {n: torch.full_like(s, float(len(result.contributors[n]))) for n, s in result.sums.items()}
    return LayerSums(dict(result.sums), counts)


def bare_updates(result: SecureResult, replies: dict[int, ClientUpdate]) -> list[ClientUpdate]:
    """The survivors' updates without tensors (metrics and sample counts only), with their protocol traffic."""
    updates = []
    for client in result.survivors:
        reply = replies[client]
        up = sum(stage.get(client, {}).get("up", 0) for stage in result.traffic.values())
        down = sum(stage.get(client, {}).get("down", 0) for stage in result.traffic.values())
        metrics = {**reply.metrics, BYTES_UP: float(up), BYTES_DOWN: float(down)}
        updates.append(ClientUpdate(client, reply.plan, {}, reply.num_samples, metrics))
    return updates


def warn_excluded(result: SecureResult, round_num: int) -> None:
    """Say which tensors were left out or withheld (fewer uploaders than `min_contributors`): their global values
    stay as they were this round."""
    if result.excluded:
        names = ", ".join(f"{n} ({why})" for n, why in sorted(result.excluded.items()))
        warnings.warn(f"round {round_num}: secure aggregation released no sum of {names}", stacklevel=2)


def lost_reasons(result: SecureResult | None, error: SecureAggregationError | None, asked: Sequence[int]) -> dict:
    """Why each asked client is not among the survivors: its stage and reason, or the round's failure."""
    if error is not None:
        return {c: f"secure aggregation failed: {error}" for c in asked}
    return {c: f"secure aggregation: {why}" for c, why in (result.lost if result else {}).items()}


class InProcessSecureDispatch:
    """The local engine's secure dispatch: `train` (the plain dispatch) trains the clients in this process, each
    client's change is then masked by its own `LocalClient` and only the masked vectors reach `secure_sum`.
    Everything runs in one process, so this measures the protocol's effect (quantisation, dropouts, overhead) rather
    than hiding anything from anyone."""

    def __init__(
        self,
        train: Callable[[int, dict[int, Plan], dict[str, torch.Tensor]], list[ClientUpdate]],
        uploads: Uploads,
        settings: SecureSettings,
        seed: int,
    ) -> None:
        self.train, self.uploads, self.settings, self.seed = train, uploads, settings, seed
        self.lost: dict[int, str] = {}
        self.last: SecureResult | None = None

    def secure_round(
        self, round_num: int, plans: dict[int, Plan], global_state: dict[str, torch.Tensor]
    ) -> tuple[list[ClientUpdate], LayerSums]:
        """Train, mask, sum (`server.loop.SecureDispatch`); a round the protocol cannot finish releases nothing."""
        replies = {u.client_id: u for u in self.train(round_num, plans, global_state)}
        clients = {
            c: LocalClient(c, changes(global_state, u), rounding_rng(client_seed(self.seed, round_num, c)))
            for c, u in replies.items()
        }
        members, shapes = round_tensors(plans, self.uploads)
        exchange = InProcessExchange(clients)
        try:
            result = secure_sum(exchange, sorted(plans), members, shapes, self.settings)
        except SecureAggregationError as err:
            self.lost, self.last = lost_reasons(None, err, sorted(plans)), None
            warnings.warn(f"round {round_num}: {err}", stacklevel=2)
            return [], LayerSums({}, {})
        self.lost, self.last = lost_reasons(result, None, sorted(plans)), result
        self.lost.update(
            {c: f"{self.lost.get(c, 'secure aggregation')}: {why}" for c, why in exchange.refusals.items()}
        )
        warn_excluded(result, round_num)
        return bare_updates(result, replies), layer_sums(result)

    def lost_reasons(self) -> dict[int, str]:
        """Why each client of the last round is not among the survivors (`server.loop.ExplainsLosses`)."""
        return dict(self.lost)
