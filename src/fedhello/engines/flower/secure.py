"""Secure aggregation over Flower messages (`secure.enabled`): each round is four exchanges, one per stage of
`fedhello.secure` (message types below); the masked-input one also carries the train task, so clients train in it.

A stage's payload travels as a `ConfigRecord` ("secagg": numbers, strings, bytes and lists of them) and, in a
masked-input reply, an `ArrayRecord` ("masked": unsigned integer arrays); the reply also holds the client's metrics
and sample count, never a tensor of its update. A client's secrets stay on its node between the stages, in the
ClientApp's `context.state` (one `ConfigRecord` per client: a node may serve several), which the SuperNode keeps
for the run under both the simulation runtime and deployment.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Protocol

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedhello.aggregation.base import LayerSums
from fedhello.config import RunConfig
from fedhello.engines.flower.messages import TrainTask, state_to_record, train_content
from fedhello.errors import FedHelloError
from fedhello.plan import ClientUpdate, Plan
from fedhello.secure import (
    MASKED_INPUT,
    SETUP,
    SHARE_KEYS,
    UNMASK,
    Payload,
    SecureAggregationError,
    SecureResult,
    secure_sum,
)
from fedhello.seeding import client_seed
from fedhello.server.secure import Uploads, bare_updates, layer_sums, round_tensors, secure_settings, warn_excluded

# Flower 1.42 routes "<train|evaluate|query>.<action>" to the ClientApp function registered for that action
MESSAGE_TYPES = {
    SETUP: "query.secagg_setup",
    SHARE_KEYS: "query.secagg_share_keys",
    MASKED_INPUT: "train.secagg_masked_input",
    UNMASK: "query.secagg_unmask",
}
PAYLOAD, MASKED, CLIENT = "secagg", "masked", "client"
STATE_PREFIX = "secagg."  # context.state key of one client's secrets: "secagg.<client id>"


def payload_content(payload: Payload, client_id: int, content: RecordDict | None = None) -> RecordDict:
    """A stage's payload (or reply) as message content, added to `content` when given (the masked-input stage's
    train task)."""
    content = content if content is not None else RecordDict({})
    plain = {k: v for k, v in payload.items() if k != MASKED}
    content[PAYLOAD] = ConfigRecord(plain)
    content[CLIENT] = ConfigRecord({"client-id": int(client_id)})
    if MASKED in payload:
        content[MASKED] = ArrayRecord({n: Array(np.ascontiguousarray(a)) for n, a in payload[MASKED].items()})
    return content


def read_payload(content: RecordDict) -> Payload:
    """The stage payload (or reply) a message content holds."""
    payload: dict[str, Any] = dict(content.config_records[PAYLOAD])
    if MASKED in content.array_records:
        payload[MASKED] = {n: a.numpy() for n, a in content.array_records[MASKED].items()}
    return payload


def content_client(content: RecordDict) -> int:
    """The client id a secure-aggregation message is for (or a reply from)."""
    return int(content.config_records[CLIENT]["client-id"])


def reply_metrics(content: RecordDict) -> dict[str, float]:
    """The metrics of a masked-input reply (with its "num-samples")."""
    return dict(content.metric_records["metrics"]) if "metrics" in content.metric_records else {}


def with_metrics(content: RecordDict, metrics: dict[str, float]) -> RecordDict:
    content["metrics"] = MetricRecord(metrics)
    return content


def load_state(context: Context, client_id: int) -> dict[str, Any]:
    """This client's secrets of the running round, from the ClientApp's `context.state` (empty at set-up)."""
    record = context.state.config_records.get(f"{STATE_PREFIX}{client_id}")
    return dict(record) if record is not None else {}


def save_state(context: Context, client_id: int, state: dict[str, Any]) -> None:
    """Keep this client's secrets in `context.state` for its next stage; none are kept after the round."""
    key = f"{STATE_PREFIX}{client_id}"
    if state:
        context.state[key] = ConfigRecord(state)
    elif key in context.state:
        del context.state[key]


class Dispatch(Protocol):
    """What `SecureFlowerRounds` uses of `serverapp.FlowerDispatch` (typed here so this module never imports it)."""

    config: RunConfig
    config_json: str
    state_dir: str | None
    lost: dict[int, str]
    log: Any

    def ready(self) -> set[int]: ...
    def holder(self, client_id: int, live: set[int]) -> int | None: ...
    def lose(self, round_num: int, client_id: int, node: int | None, why: str) -> None: ...
    def lost_reasons(self) -> dict[int, str]: ...
    def exchange_messages(
        self, round_num: int, targets: dict[int, tuple[int, Message]], what: str = ""
    ) -> dict[int, Message]: ...


class SecureFlowerRounds:
    """The Flower engine's secure dispatch (`server.loop.SecureDispatch`): a round is `secure_sum` over Flower
    messages, each stage one exchange of `dispatch` (client -> node mapping, deadlines, lost clients as in a plain
    round). Clients train in the masked-input stage; the server reads only masked arrays and metrics."""

    def __init__(self, dispatch: Dispatch, uploads: Uploads) -> None:
        self.dispatch = dispatch
        self.uploads = uploads
        self.settings = secure_settings(dispatch.config)

    def lost_reasons(self) -> dict[int, str]:
        """Why each client of the last round is not among the survivors (`server.loop.ExplainsLosses`)."""
        return self.dispatch.lost_reasons()

    def secure_round(
        self, round_num: int, plans: dict[int, Plan], state: dict[str, torch.Tensor]
    ) -> tuple[list[ClientUpdate], LayerSums]:
        """Train the plans' clients and return their updates without tensors and the released per-tensor sums; a
        round the protocol cannot finish (fewer than the threshold left) releases nothing."""
        dispatch = self.dispatch
        dispatch.lost = {}
        live = dispatch.ready()
        nodes: dict[int, int] = {}
        for cid in sorted(plans):
            node = dispatch.holder(cid, live)
            if node is None:
                dispatch.lose(round_num, cid, None, "no live SuperNode serves its partition")
            else:
                nodes[cid] = node
        arrays = state_to_record(state)  # the global adapter, encoded once for every masked-input message
        trained: dict[int, ClientUpdate] = {}

        def exchange(stage: str, payloads: dict[int, Payload]) -> dict[int, Payload]:
            targets = {}
            for cid, payload in payloads.items():
                task = None
                if stage == MASKED_INPUT:  # the train task travels with the stage: clients train, then mask
                    seed = client_seed(dispatch.config.seed, round_num, cid)
                    train = TrainTask(cid, round_num, seed, plans[cid], dispatch.config_json, state, dispatch.state_dir)
                    task = train_content(train, arrays)
                content = payload_content(payload, cid, task)
                message = Message(
                    content, dst_node_id=nodes[cid], message_type=MESSAGE_TYPES[stage], group_id=f"{round_num}.{stage}"
                )
                targets[cid] = (nodes[cid], message)
            replies: dict[int, Payload] = {}
            for cid, reply in dispatch.exchange_messages(round_num, targets, f"{stage}: ").items():
                try:
                    if content_client(reply.content) != cid:
                        raise FedHelloError(f"reply is for client {content_client(reply.content)}")
                    replies[cid] = read_payload(reply.content)
                    if stage == MASKED_INPUT:
                        metrics = reply_metrics(reply.content)
                        samples = int(metrics.pop("num-samples"))
                        trained[cid] = ClientUpdate(
                            cid, plans[cid], {}, samples, {k: float(v) for k, v in metrics.items()}
                        )
                except (KeyError, ValueError, TypeError, FedHelloError) as err:
                    replies.pop(cid, None)
                    dispatch.lose(round_num, cid, nodes[cid], f"malformed {stage} reply: {err}")
            return replies

        members, shapes = round_tensors({c: plans[c] for c in nodes}, self.uploads)
        try:
            result = secure_sum(exchange, sorted(nodes), members, shapes, self.settings)
        except SecureAggregationError as err:
            dispatch.log.write(f"round {round_num}: {err}; the round releases nothing", logging.WARNING)
            warnings.warn(f"round {round_num}: {err}", stacklevel=2)
            for cid in nodes:
                dispatch.lost.setdefault(cid, f"secure aggregation failed: {err}")
            return [], LayerSums({}, {})
        for cid, why in result.lost.items():
            dispatch.lost.setdefault(cid, f"secure aggregation: {why}")
        warn_excluded(result, round_num)
        dispatch.log.write(f"round {round_num}: secure aggregation: {traffic_line(result)}")
        return bare_updates(result, trained), layer_sums(result)


def traffic_line(result: SecureResult) -> str:
    """One flower.log line: who survived, and the mean bytes and the seconds of each stage."""
    parts = []
    for stage, clients in result.traffic.items():
        up = sum(c["up"] for c in clients.values()) / max(1, len(clients))
        down = sum(c["down"] for c in clients.values()) / max(1, len(clients))
        parts.append(f"{stage} {result.seconds.get(stage, 0.0):.2f}s up {up:.0f} B down {down:.0f} B")
    dropped = f", dropped {result.dropped}" if result.dropped else ""
    return f"{len(result.survivors)} survivors{dropped}; per client: " + "; ".join(parts)
