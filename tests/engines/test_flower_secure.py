"""Secure aggregation over Flower (`secure.enabled`): the four stages as Flower messages, the clients' secrets in
`context.state` between them, training in the masked-input stage.

A loopback Grid runs the real ClientApp in this process, each node with one Context for the whole run (as a
SuperNode keeps it), so the protocol's Flower path is tested in seconds; the real runtimes (Ray simulation, a
SuperLink with SuperNodes) run once each.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch
from flower_helpers import adapter_tensors, metrics
from flwr.app import Context, Error, Message, RecordDict

from fedhello.config import config_from_dict
from fedhello.engines import ENGINES
from fedhello.engines.flower import clientapp
from fedhello.engines.flower.messages import NUM_PARTITIONS, PARTITION_ID
from fedhello.engines.flower.secure import MESSAGE_TYPES, STATE_PREFIX
from fedhello.engines.flower.serverapp import build_server_app
from fedhello.secure import MASKED_INPUT, UNMASK

try:  # Flower stamps every new Message with the identity of the running task
    from flwr.supercore.task_identity import TaskIdentity
except ImportError:  # pragma: no cover - other 1.4x layouts
    TaskIdentity = None


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    if TaskIdentity is not None:
        for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
            monkeypatch.setattr(TaskIdentity, name, value)


def secure_config(tiny_config, enabled: bool = True, clients: int = 3):
    """`clients` clients, all sampled, 2 rounds; one trains 2 layers, the others all 4: every uploaded tensor has at
    least 2 uploaders, and the uploaders differ from layer to layer."""
    tree = tiny_config.model_dump(mode="json")
    tree["federation"].update({"num_clients": clients, "clients_per_round": clients, "rounds": 2})
    tree["tiers"] = [{"share": f"1/{clients}", "layers": 2}, {"share": f"{clients - 1}/{clients}", "layers": 4}]
    tree["strategy"] = {"name": "gd"}
    tree["aggregation"] = {"weighting": "uniform"}
    tree["output"]["plot"] = False
    tree["flower"] = {"supernodes": clients}
    tree["secure"] = {"enabled": enabled}
    return config_from_dict(tree)


class LoopbackGrid:
    """Node 100 + i serves partition i with the real ClientApp, in this process; each node keeps ONE Context for the
    run. `fail[(client, stage)]` makes that client's node answer that stage with an error. `replies` keeps
    every reply's content the server received."""

    def __init__(self, num_nodes: int, fail: set[tuple[int, str]] = frozenset()) -> None:
        self.contexts = {
            100 + i: Context(1, 100 + i, {PARTITION_ID: i, NUM_PARTITIONS: num_nodes}, RecordDict(), {})
            for i in range(num_nodes)
        }
        self.fail = fail
        self.pending: dict[str, Message] = {}
        self.replies: list[tuple[str, RecordDict]] = []

    def get_node_ids(self) -> list[int]:
        return sorted(self.contexts)

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            node = msg.metadata.dst_node_id
            stage = next((s for s, t in MESSAGE_TYPES.items() if t == msg.metadata.message_type), None)
            client = node - 100
            if (client, stage) in self.fail:
                reply = Message(Error(code=0, reason="node went away"), reply_to=msg)
            else:
                reply = clientapp.app(message=msg, context=self.contexts[node])
                self.replies.append((msg.metadata.message_type, reply.content))
            self.pending[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, ids: list[str]) -> list[Message]:
        return [self.pending.pop(i) for i in ids if i in self.pending]

    def send_and_receive(self, messages: list[Message], timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))


def serve(config, run_dir, grid):
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config={})
    build_server_app([(config, run_dir)])(grid, context)


def max_difference(a, b) -> float:
    left, right = adapter_tensors(a), adapter_tensors(b)
    assert set(left) == set(right) and left
    return max((left[k] - right[k]).abs().max().item() for k in left)


def test_secure_rounds_over_flower_messages_equal_a_plain_local_run(tiny_config, tmp_path):
    ENGINES.get("local")().run(secure_config(tiny_config, False), tmp_path / "plain", show_progress=False)
    grid = LoopbackGrid(3)
    serve(secure_config(tiny_config), tmp_path / "secure", grid)
    # every entry's mean moves by < 1 quantisation step a round (~7e-10): the float32 adapter hides it
    assert max_difference(tmp_path / "plain", tmp_path / "secure") < 1e-5
    for record in metrics(tmp_path / "secure"):
        assert [c["id"] for c in record["clients"]] == [0, 1, 2] and record["failed_clients"] == []
        assert record["bytes_up"] == 0 and all(c["secure_bytes_up"] > 0 for c in record["clients"])
    # 4 stages x 3 clients x 2 rounds; the server got no plaintext tensor: arrays only as masked uint32 vectors
    assert len(grid.replies) == 4 * 3 * 2 + 3  # and the start-up partition queries
    for kind, content in grid.replies:
        for name, record in content.array_records.items():
            assert kind == MESSAGE_TYPES[MASKED_INPUT] and name == "masked"
            assert all(array.numpy().dtype == np.uint32 for array in record.values())
    # the secrets lived in the nodes' context.state between stages, and none outlived a round
    assert all(not any(k.startswith(STATE_PREFIX) for k in c.state) for c in grid.contexts.values())
    log = (tmp_path / "secure" / "flower.log").read_text()
    assert "round 2: secure aggregation: 3 survivors; per client: setup" in log


def test_a_client_lost_after_sharing_keys_is_recovered(tiny_config, tmp_path):
    """Client 0 (the 2-layer one) trains but its node fails the masked-input stage: the others' sums are released
    (its pairwise masks removed with its reconstructed key) and it is recorded as lost with the reason."""
    config = secure_config(tiny_config, clients=4)
    grid = LoopbackGrid(4, fail={(0, MASKED_INPUT), (3, UNMASK)})  # 3 still sent its input: only its shares miss
    serve(config, tmp_path / "secure", grid)
    for record in metrics(tmp_path / "secure"):
        assert [c["id"] for c in record["clients"]] == [1, 2, 3] and not record["skipped"]
        (lost,) = record["failed_clients"]
        assert lost["id"] == 0 and "node went away" in lost["detail"]
    for name, tensor in adapter_tensors(tmp_path / "secure").items():
        assert torch.isfinite(tensor).all(), name


def test_a_round_below_threshold_is_skipped_and_said(tiny_config, tmp_path):
    config = secure_config(tiny_config)
    config.secure.threshold = 1.0
    config.federation.rounds = 1
    with pytest.warns(UserWarning, match="fewer than the threshold 3"):
        serve(config, tmp_path / "secure", LoopbackGrid(3, fail={(1, MASKED_INPUT)}))
    (record,) = metrics(tmp_path / "secure")
    assert record["skipped"] and record["clients"] == []
    reasons = {f["id"]: f.get("detail", "") for f in record["failed_clients"]}
    assert "node went away" in reasons[1] and "secure aggregation failed" in reasons[0]
    log = (tmp_path / "secure" / "flower.log").read_text()
    assert "fewer than the threshold 3" in log and "the round releases nothing" in log
