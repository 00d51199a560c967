"""The Flower dispatch without a Flower runtime: message encoding, client->node mapping, lost clients.

A fake Grid answers train messages like a ClientApp would (or stays silent, or errs), so the
server-side logic is tested in milliseconds; a loopback Grid runs the real ClientApp in this process,
so the ServerApps of both engines are tested end to end in seconds. The real runtimes are covered by
test_flower_sim.py and test_flower_deploy.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from flower_helpers import metrics
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict

from fedhello.config import config_from_dict, dump_config
from fedhello.engines.flower import clientapp, serverapp
from fedhello.engines.flower.clientapp import node_partition
from fedhello.engines.flower.messages import (
    LOCAL_DATA,
    NUM_PARTITIONS,
    PARTITION_ID,
    QUERY,
    TrainTask,
    read_train_content,
    read_update_content,
    train_content,
    update_content,
)
from fedhello.engines.flower.serverapp import EngineLog, FlowerDispatch, build_server_app
from fedhello.errors import FedHelloError
from fedhello.methods import method_config
from fedhello.plan import ClientUpdate, Plan

try:  # Flower stamps every new Message with the identity of the running task
    from flwr.supercore.task_identity import TaskIdentity
except ImportError:  # pragma: no cover - other 1.4x layouts
    TaskIdentity = None

STATE = {
    "layer.0.lora_A": torch.arange(6, dtype=torch.float32).reshape(2, 3),
    "layer.1.lora_A": torch.ones(2, 3),
    "classifier.weight": torch.full((4, 2), 0.5),
}


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """What a ServerApp process has set when its main runs (restored afterwards)."""
    if TaskIdentity is not None:
        for name, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
            monkeypatch.setattr(TaskIdentity, name, value)


class FakeGrid:
    """Nodes with (partition, num-partitions); `silent` nodes never reply, `failing` ones reply with an error."""

    def __init__(self, partitions: dict[int, tuple[int, int]]) -> None:
        self.partitions = partitions
        self.connected = set(partitions)
        self.silent: set[int] = set()
        self.failing: set[int] = set()
        self.local_data: set[int] = set()  # nodes started with a data-path of their own
        self.sent: list[Message] = []
        self.replies: dict[str, Message] = {}

    def get_node_ids(self) -> list[int]:
        return sorted(self.connected)

    def _answer(self, msg: Message) -> Message | None:
        node = msg.metadata.dst_node_id
        if node in self.silent:
            return None
        if node in self.failing:
            return Message(Error(code=0, reason="boom"), reply_to=msg)
        if msg.metadata.message_type == QUERY:
            partition, total = self.partitions[node]
            info = {PARTITION_ID: partition, NUM_PARTITIONS: total, LOCAL_DATA: node in self.local_data}
            content = RecordDict({"node": ConfigRecord(info)})
            return Message(content, reply_to=msg)
        task = read_train_content(msg.content)
        tensors = {"layer.0.lora_A": task.state["layer.0.lora_A"] + task.client_id}
        update = ClientUpdate(task.client_id, task.plan, tensors, num_samples=10 + task.client_id, metrics={"s": 1.0})
        return Message(update_content(update), reply_to=msg)

    def push_messages(self, messages: list[Message]) -> list[str]:
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            self.sent.append(msg)
            reply = self._answer(msg)
            if reply is not None:
                self.replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, ids: list[str]) -> list[Message]:
        return [self.replies.pop(i) for i in ids if i in self.replies]

    def send_and_receive(self, messages: list[Message], timeout: float | None = None) -> list[Message]:
        return self.pull_messages(self.push_messages(messages))


def make_dispatch(grid: FakeGrid, tmp_path, **flower) -> FlowerDispatch:
    config = config_from_dict({"federation": {"num_clients": 4, "clients_per_round": 4}, "flower": flower})
    return FlowerDispatch(grid, config, EngineLog(tmp_path / "flower.log"))


def test_messages_carry_only_arrays_and_plain_values():
    plan = Plan(layers=(2, 0), train_head=False)
    task = TrainTask(client_id=3, round_num=2, seed=11, plan=plan, config_json='{"seed": 1}', state=STATE)
    content = train_content(task)
    assert set(content.array_records) == {"global"} and set(content.config_records) == {"task"}
    for value in content.config_records["task"].values():
        assert isinstance(value, int | str)
    back = read_train_content(content)
    assert (back.client_id, back.round_num, back.seed, back.plan, back.config_json) == (3, 2, 11, plan, '{"seed": 1}')
    for name, tensor in STATE.items():
        assert torch.equal(back.state[name], tensor)
        assert isinstance(content.array_records["global"][name].numpy(), np.ndarray)

    update = ClientUpdate(3, plan, {"layer.0.lora_A": STATE["layer.0.lora_A"] * 2}, 17, {"train_loss": 0.5})
    reply = update_content(update)
    assert isinstance(reply.array_records["update"], ArrayRecord)
    assert isinstance(reply.metric_records["metrics"], MetricRecord)
    got = read_update_content(reply, plan)
    assert got.client_id == 3 and got.num_samples == 17 and got.metrics == {"train_loss": 0.5}
    assert set(got.tensors) == {"layer.0.lora_A"} and torch.equal(
        got.tensors["layer.0.lora_A"], update.tensors["layer.0.lora_A"]
    )


def test_clients_go_to_the_node_of_their_partition(tmp_path):
    grid = FakeGrid({101: (0, 2), 202: (1, 2)})
    dispatch = make_dispatch(grid, tmp_path)
    plans = {c: Plan(layers=(0,)) for c in (3, 0, 1, 2)}
    updates = dispatch(1, plans, STATE)
    assert [u.client_id for u in updates] == [3, 0, 1, 2], "plan order, not arrival order"
    train = [m for m in grid.sent if m.metadata.message_type == "train"]
    routed = {read_train_content(m.content).client_id: m.metadata.dst_node_id for m in train}
    assert routed == {0: 101, 2: 101, 1: 202, 3: 202}
    assert all(m.metadata.group_id == "1" for m in train)
    for update in updates:
        assert torch.equal(update.tensors["layer.0.lora_A"], STATE["layer.0.lora_A"] + update.client_id)
        assert update.num_samples == 10 + update.client_id


def test_a_disconnected_node_loses_its_clients_and_the_round_goes_on(tmp_path):
    grid = FakeGrid({101: (0, 2), 202: (1, 2)})
    dispatch = make_dispatch(grid, tmp_path)
    dispatch(1, {0: Plan(layers=(0,))}, STATE)  # both nodes known
    grid.silent.add(202)
    grid.connected.discard(202)  # the SuperLink no longer lists it
    updates = dispatch(2, {0: Plan(layers=(0,)), 1: Plan(layers=(1,))}, STATE)
    assert [u.client_id for u in updates] == [0]
    log = (tmp_path / "flower.log").read_text()
    assert "round 2: lost client 1" in log and "no live SuperNode serves its partition" in log


def test_a_silent_node_times_out_and_is_not_asked_again(tmp_path):
    grid = FakeGrid({101: (0, 2), 202: (1, 2)})
    dispatch = make_dispatch(grid, tmp_path, round_timeout_s=0.3)
    dispatch(1, {0: Plan(layers=(0,))}, STATE)
    grid.silent.add(202)  # crashed but still listed (heartbeat not yet expired)
    updates = dispatch(2, {0: Plan(layers=(0,)), 1: Plan(layers=(1,))}, STATE)
    assert [u.client_id for u in updates] == [0]
    assert (
        "round 2: lost client 1 (node 202, partition 1): no reply within 0.3s" in (tmp_path / "flower.log").read_text()
    )
    sent_before = len(grid.sent)
    updates = dispatch(3, {1: Plan(layers=(1,)), 2: Plan(layers=(0,))}, STATE)
    assert [u.client_id for u in updates] == [2]
    assert all(m.metadata.dst_node_id != 202 for m in grid.sent[sent_before:])


def test_an_error_reply_loses_the_client(tmp_path):
    grid = FakeGrid({101: (0, 2), 202: (1, 2)})
    dispatch = make_dispatch(grid, tmp_path)
    dispatch(1, {0: Plan(layers=(0,))}, STATE)
    grid.failing.add(202)
    updates = dispatch(2, {0: Plan(layers=(0,)), 1: Plan(layers=(1,))}, STATE)
    assert [u.client_id for u in updates] == [0]
    assert "lost client 1 (node 202, partition 1): error reply: boom" in (tmp_path / "flower.log").read_text()
    assert dispatch.lost_reasons() == {1: "error reply: boom (node 202, partition 1)"}, "metrics.jsonl gets it"
    dispatch(3, {0: Plan(layers=(0,))}, STATE)
    assert dispatch.lost_reasons() == {}, "reasons are per round"


def test_a_clientapp_exception_reads_as_one_line():
    wrapped = "<class 'fedhello.errors.FedHelloError'>:<'node data \\'/a.csv\\': labels [\\'x\\']\n are bad'>"
    assert serverapp.error_text(wrapped).startswith("FedHelloError: node data")
    assert "\n" not in serverapp.error_text(wrapped)
    assert serverapp.error_text("boom") == "boom", "other reasons pass unchanged"


def test_missing_partitions_and_node_config_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setattr("fedhello.engines.flower.serverapp.STARTUP_TIMEOUT_S", 0.0)
    dispatch = make_dispatch(FakeGrid({101: (0, 3), 202: (2, 3)}), tmp_path)
    with pytest.raises(FedHelloError, match=r"no SuperNode serves partitions \['1'\]"):
        dispatch(1, {0: Plan(layers=(0,))}, STATE)
    context = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    with pytest.raises(FedHelloError, match="partition-id=I num-partitions=K"):
        node_partition(context)


class LoopbackGrid(FakeGrid):
    """Nodes that answer with the real ClientApp functions in this process (no Ray, no SuperNodes): node
    100 + i serves partition i. `tamper(message, reply)` may change a train reply on its way back."""

    def __init__(self, num_nodes: int, tamper=None) -> None:  # noqa: ANN001
        super().__init__({100 + i: (i, num_nodes) for i in range(num_nodes)})
        self.tamper = tamper

    def _answer(self, msg: Message) -> Message | None:
        partition, total = self.partitions[msg.metadata.dst_node_id]
        node_config = {PARTITION_ID: partition, NUM_PARTITIONS: total}
        context = Context(
            run_id=1, node_id=msg.metadata.dst_node_id, node_config=node_config, state=RecordDict(), run_config={}
        )
        if msg.metadata.message_type == QUERY:
            return clientapp.query(msg, context)
        reply = clientapp.train(msg, context)
        if self.tamper is not None:
            self.tamper(msg, reply)
        return reply


def inflate_first_claim(liars: list[int]):  # noqa: ANN201
    """A tamper that makes the first client of every round claim 10^12 training samples."""

    def tamper(msg: Message, reply: Message) -> None:
        task = read_train_content(msg.content)
        if len(liars) < task.round_num:
            liars.append(task.client_id)
            reply.content.metric_records["metrics"]["num-samples"] = 10**12

    return tamper


def server_context(run_config: dict | None = None) -> Context:
    return Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config or {})


def flexlora_config(tiny_config):  # noqa: ANN001, ANN201
    """FlexLoRA (rank-truncated uploads, samples-weighted) for one round without plots or adapter."""
    tree = tiny_config.model_dump(mode="json")
    tree["federation"]["rounds"] = 1
    tree["output"].update(plot=False, save_adapter=False)
    return method_config(tree, "flexlora")


def test_the_simulation_server_holds_claims_to_its_own_partition_sizes(tiny_config, tmp_path):
    liars: list[int] = []
    grid = LoopbackGrid(tiny_config.federation.num_clients, inflate_first_claim(liars))
    build_server_app([(flexlora_config(tiny_config), tmp_path / "run")])(grid, server_context())

    (record,) = metrics(tmp_path / "run")
    (liar,) = liars
    assert [(r["id"], r["reason"].split(",")[0]) for r in record["rejected"]] == [
        (liar, f"num_samples: claims {10**12}")
    ]
    assert "the server's partition of this client holds" in record["rejected"][0]["reason"]
    # the honest clients' rank-truncated uploads went through the Flower dispatch and were accepted
    assert len(record["clients"]) == tiny_config.federation.clients_per_round - 1 and record["failed_clients"] == []
    assert "lost client" not in (tmp_path / "run" / "flower.log").read_text()


def test_the_deployment_server_bounds_claims_by_the_round_median(tiny_config, tmp_path):
    liars: list[int] = []
    grid = LoopbackGrid(tiny_config.federation.num_clients, inflate_first_claim(liars))
    path = tmp_path / "config.yaml"
    dump_config(flexlora_config(tiny_config), path)
    serverapp.app(grid, server_context({"config": str(path), "run-dir": str(tmp_path / "run")}))

    (record,) = metrics(tmp_path / "run")
    (rejection,) = record["rejected"]
    assert rejection["id"] == liars[0] and rejection["reason"].startswith("num_samples: claims 1000000000000 > 10 x")
    assert len(record["clients"]) == tiny_config.federation.clients_per_round - 1


def test_node_data_needs_one_node_with_data_per_client(tmp_path):
    grid = FakeGrid({10 + i: (i, 4) for i in range(4)})
    grid.local_data = set(grid.partitions)
    dispatch = make_dispatch(grid, tmp_path, node_data=True)
    dispatch.wait_for_partitions()
    assert (tmp_path / "flower.log").read_text().count("with its own data") == 4

    grid = FakeGrid({10: (0, 2), 11: (1, 2)})
    grid.local_data = {10, 11}
    with pytest.raises(FedHelloError, match="num-partitions=2, the run has 4 clients"):
        make_dispatch(grid, tmp_path, node_data=True).wait_for_partitions()

    grid = FakeGrid({10 + i: (i, 4) for i in range(4)})
    grid.local_data = {10, 12, 13}
    with pytest.raises(FedHelloError, match=r"SuperNodes of partitions \[1\] hold no data"):
        make_dispatch(grid, tmp_path, node_data=True).wait_for_partitions()


def test_nodes_own_data_unused_without_node_data_is_said_once(tmp_path, monkeypatch):
    grid = FakeGrid({10: (0, 2), 11: (1, 2)})
    grid.local_data = {10}
    grid.connected = {10}  # partition 1's node connects while the dispatch waits

    def node_11_connects(seconds: float) -> None:
        grid.connected.add(11)

    monkeypatch.setattr(serverapp.time, "sleep", node_11_connects)
    make_dispatch(grid, tmp_path).wait_for_partitions()
    text = (tmp_path / "flower.log").read_text()
    assert "2 SuperNodes serve all 2 partitions" in text
    assert text.count("hold data of their own") == 1


def test_the_deploy_engine_echoes_losses_from_flower_log_as_they_are_written(tmp_path):
    from fedhello.engines.flower.deploy import LogFollower

    log = tmp_path / "flower.log"
    echoed: list[str] = []
    follow = LogFollower(log, echoed.append)
    follow()  # no log yet: nothing, no error
    EngineLog(log).write("node 7 serves partition 0 of 2")
    EngineLog(log).write("round 1: lost client 1 (node 8, partition 1): error reply: FedHelloError: bad", 30)
    with log.open("a") as f:
        f.write("2026-01-01T00:00:00 round 2: lost client")  # a line still being written
    follow()
    assert echoed == ["round 1: lost client 1 (node 8, partition 1): error reply: FedHelloError: bad"]
    with log.open("a") as f:
        f.write(" 0: its SuperNode disconnected\n")
    follow()
    assert echoed[1:] == ["round 2: lost client 0: its SuperNode disconnected"], "each line once, when complete"


def test_a_node_sends_only_the_metrics_it_shares():
    metrics = {
        "train_loss": 0.5, "steps": 3.0, "seconds": 1.2, "step_seconds": 0.4, "bytes_up": 100.0,
        "peak_mem_mb": 20.0, "grad_norm.3": 0.1, "grad_norm.11": 0.2, "kept_rank.3": 4.0,
    }  # fmt: skip
    assert clientapp.shared_metrics(metrics, {"loss"}) == {"train_loss": 0.5, "steps": 3.0, "bytes_up": 100.0}
    assert set(clientapp.shared_metrics(metrics, {"grad_norms", "method"})) == {
        "bytes_up", "grad_norm.3", "grad_norm.11", "kept_rank.3",
    }  # fmt: skip
    everything = config_from_dict({}).flower.node_shares
    assert clientapp.shared_metrics(metrics, set(everything)) == metrics, "by default, what was always sent"


def test_a_node_narrows_the_runs_shares_and_keeps_its_errors(tiny_config):
    config = tiny_config.model_copy(deep=True)
    config.flower.node_data = True  # this node has no data-path: its worker refuses to start, naming the key
    config.flower.node_shares = ["loss", "timing", "errors"]
    task = TrainTask(0, 1, 5, Plan(layers=(0,)), config.model_dump_json(), STATE)
    msg = Message(content=train_content(task), dst_node_id=1, message_type="train")

    def context(**node):  # noqa: ANN003, ANN202
        values = {PARTITION_ID: 0, NUM_PARTITIONS: 2, **node}
        return Context(run_id=1, node_id=1, node_config=values, state=RecordDict(), run_config={})

    assert clientapp.node_shares(context(shares="loss, memory"), task.config_json) == {"loss"}
    assert clientapp.node_shares(context(), task.config_json) == {"loss", "timing", "errors"}
    with pytest.raises(FedHelloError, match="this SuperNode has none .*data-path"):
        clientapp.train(msg, context())  # errors shared: the server learns why
    with pytest.raises(FedHelloError) as withheld:
        clientapp.train(msg, context(shares="loss,timing"))
    assert "its reason stays there" in str(withheld.value) and "data-path" not in str(withheld.value)


def test_a_serverapp_stopped_by_flower_says_so_in_flower_log(tmp_path):
    """Flower stops a ServerApp whose SuperLink is gone through `flwr_exit`, whose exit handlers run before any
    exception could reach fedhello (and may end in `os._exit`): the run's flower.log must still say so."""
    from flwr.supercore.exit.exit_handler import trigger_exit_handlers

    with serverapp.said_when_stopped(tmp_path):
        trigger_exit_handlers(run_before_force_exit=True)  # what flwr_exit does first on SIGINT / SIGTERM
    assert "run stopped: Flower stopped the ServerApp" in (tmp_path / "flower.log").read_text()
    assert f"run-dir={tmp_path}" in (tmp_path / "flower.log").read_text()

    finished = tmp_path / "finished"
    with serverapp.said_when_stopped(finished):
        pass  # the run ended: Flower's exit at the end of every ServerApp process writes nothing
    trigger_exit_handlers(run_before_force_exit=True)
    assert not (finished / "flower.log").exists()


def test_a_node_keeps_personal_state_where_the_server_or_its_own_config_says():
    """flower-sim: the folder the train message names (under the run folder); flower-deploy: the node's own
    --node-config state-dir; a personalised plan with neither is refused with the fix."""
    from types import SimpleNamespace

    from fedhello.engines.flower.clientapp import client_store
    from fedhello.engines.flower.messages import STATE_DIR, TrainTask, read_train_content, train_content
    from fedhello.plan import Plan

    def task(state_dir, personal=()):  # noqa: ANN001, ANN202
        sent = TrainTask(1, 2, 3, Plan((0,), personal=personal), "{}", {"w": torch.zeros(1)}, state_dir)
        return read_train_content(train_content(sent))  # what the node reads

    assert task("/run/clients").state_dir == "/run/clients" and task(None).state_dir is None
    assert client_store(task("/run/clients"), SimpleNamespace(node_config={})).root == Path("/run/clients")
    node = SimpleNamespace(node_config={STATE_DIR: "/srv/state"})
    assert client_store(task(None, ("B",)), node).root == Path("/srv/state")
    assert client_store(task(None), SimpleNamespace(node_config={})) is None  # nothing personal: no store needed
    with pytest.raises(FedHelloError, match="state-dir=/path/on/the/node"):
        client_store(task(None, ("B",)), SimpleNamespace(node_config={}))
