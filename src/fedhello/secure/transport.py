"""An in-process transport: the clients are Python objects, a stage's exchange is a loop over them.

`LocalClient` runs the client handlers with its own state; `InProcessExchange` is an `Exchange` that calls them, can
make a client drop out from a given stage on, and can record every reply the server receives (for tests and for
measuring what the server sees).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedhello.secure.client import STAGES, Delta, Payload, handle
from fedhello.secure.settings import SecureAggregationError


@dataclass
class LocalClient:
    """One client of the protocol in this process: its id, its change per uploaded tensor and its secrets."""

    client_id: int
    delta: Delta
    rng: np.random.Generator | None = None
    state: dict[str, Any] = field(default_factory=dict)

    def __call__(self, stage: str, payload: Payload) -> Payload:
        return handle(stage, payload, self.state, client_id=self.client_id, delta=self.delta, rng=self.rng)


@dataclass
class InProcessExchange:
    """`exchange(stage, payloads) -> replies` over in-process clients.

    `drop_at[c] = stage`: client c sends nothing from that stage on (it still gets the payload: it dropped after
    receiving it). With `record`, `received` keeps (stage, client, reply) of every reply the server got. A client
    that refuses a stage (`SecureAggregationError`) sends nothing, as over a network; `refusals` says why.
    """

    clients: Mapping[int, Any]
    drop_at: dict[int, str] = field(default_factory=dict)
    record: bool = False
    received: list[tuple[str, int, Payload]] = field(default_factory=list)
    refusals: dict[int, str] = field(default_factory=dict)

    def __call__(self, stage: str, payloads: dict[int, Payload]) -> dict[int, Payload]:
        replies: dict[int, Payload] = {}
        for client, payload in payloads.items():
            dropped_from = self.drop_at.get(client)
            if dropped_from is not None and STAGES.index(stage) >= STAGES.index(dropped_from):
                continue
            try:
                replies[client] = self.clients[client](stage, payload)
            except SecureAggregationError as err:
                self.refusals[client] = str(err)
                continue
            if self.record:
                self.received.append((stage, client, replies[client]))
        return replies


def local_clients(
    deltas: Mapping[int, Delta], rngs: Mapping[int, np.random.Generator] | None = None
) -> dict[int, LocalClient]:
    """A `LocalClient` per client id from its change per tensor (and optionally its rounding generator)."""
    return {c: LocalClient(c, delta, (rngs or {}).get(c)) for c, delta in deltas.items()}


def members_and_shapes(
    deltas: Mapping[int, Mapping[str, torch.Tensor | np.ndarray]], clients: Iterable[int] | None = None
) -> tuple[dict[str, list[int]], dict[str, tuple[int, ...]]]:
    """`tensor_members` and `shapes` of `secure_sum` from the clients' deltas (the plans, when they are honest)."""
    members: dict[str, list[int]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for client in sorted(clients if clients is not None else deltas):
        for name, tensor in deltas[client].items():
            members.setdefault(name, []).append(client)
            shapes[name] = tuple(tensor.shape)
    return members, shapes
