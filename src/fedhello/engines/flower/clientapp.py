"""The Flower ClientApp: trains one fedhello client per message with the shared `LocalTrainer`.

A worker process (a Ray actor in simulation, a `flwr-clientapp` process in deployment) builds the
federation once -- base model, task, data partitions -- and keeps it in a module-level cache, so the
model is loaded once per process, not once per client. The node serves the fedhello clients whose id
c satisfies c % num-partitions == partition-id (its `--node-config`; in simulation partition-id is the
virtual node's index and every node serves exactly one client).

A node started with `--node-config "data-path=..."` holds its own data (`flower.node_data`): it builds only
the task and model (`experiment.build_node_experiment`), never the run's data source, and serves exactly one
client, client id = partition-id. One client per node because a silo's data is one client's data: splitting
it into pseudo-clients would invent heterogeneity and divide its sample-count weight arbitrarily.

A node started with `--node-config "quantization=nf4"` (or int8, none) loads its base weights that way, whatever
the run's `model.quantization` or its clients' tiers say: the device decides what it can hold. The adapter it
trains and sends is the same full-precision one, so the server's aggregation does not change.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedhello.aggregation.base import changes
from fedhello.config import FlowerConfig, RunConfig, config_from_dict
from fedhello.data.local_test import local_test_due, split_local_test
from fedhello.data.node import NODE_DATA_KEY
from fedhello.engines.flower.messages import (
    LOCAL_DATA,
    NUM_PARTITIONS,
    PARTITION_ID,
    STATE_DIR,
    TrainTask,
    read_train_content,
    update_content,
)
from fedhello.engines.flower.secure import (
    content_client,
    load_state,
    payload_content,
    read_payload,
    save_state,
    with_metrics,
)
from fedhello.errors import FedHelloError
from fedhello.experiment import Experiment, build_node_experiment
from fedhello.models.quantize import NODE_QUANTIZATION_KEY, check_available
from fedhello.models.quantize import resolve as resolve_quantization
from fedhello.plan import GRAD_NORM, LOCAL_TEST, ClientUpdate
from fedhello.privacy.mechanism import UNCLIPPED
from fedhello.runtime import quiet_libraries
from fedhello.secure import client as secagg
from fedhello.server.federation import assign_tiers, build_federation
from fedhello.server.secure import rounding_rng
from fedhello.training import LocalTrainer, TrainerPool
from fedhello.training.schedule import round_lr
from fedhello.training.store import ClientStore

app = ClientApp()
NODE_SHARES_KEY = "shares"  # --node-config key: what this node sends at most (comma-separated, `flower.node_shares`)
# the metric keys of each share; a key in none of them is a method's own ("method")
SHARE_KEYS = {
    "loss": ("train_loss", "steps"),
    "timing": ("seconds", "step_seconds", "step_cpu_seconds"),
    "memory": ("weights_mb", "peak_mem_mb", "total_mem_mb"),
}
PREFIX_SHARES = {GRAD_NORM: "grad_norms", LOCAL_TEST: "local_test"}  # metric key prefix -> its share
# the size of the tensors that are sent anyway; adaptive clipping's bit (privacy.adaptive_clip in client mode)
ALWAYS_SENT = ("bytes_up", UNCLIPPED)


def metric_share(key: str) -> str:
    """Which share (`flower.node_shares`) a metric of an update belongs to."""
    for prefix, share in PREFIX_SHARES.items():
        if key.startswith(prefix):
            return share
    return next((share for share, keys in SHARE_KEYS.items() if key in keys), "method")


def node_shares(context: Context, config_json: str | None) -> set[str]:
    """What this node sends besides its tensors and sample count: the run's `flower.node_shares`, narrowed by the
    node's own `--node-config shares="..."`. Read from the raw config so that it holds even when the run's
    config cannot be built on this node (the very errors it may withhold)."""
    shares = set(FlowerConfig.model_fields["node_shares"].get_default(call_default_factory=True))
    with contextlib.suppress(ValueError, AttributeError):  # an unreadable config fails later, in its own words
        shares = set(json.loads(config_json or "{}").get("flower", {}).get("node_shares", shares))
    own = context.node_config.get(NODE_SHARES_KEY)
    if own is not None:
        shares &= {part.strip() for part in str(own).split(",") if part.strip()}
    return shares


def shared_metrics(metrics: dict[str, float], shares: set[str]) -> dict[str, float]:
    """The metrics of an update that this node sends (`node_shares`)."""
    return {k: v for k, v in metrics.items() if k in ALWAYS_SENT or metric_share(k) in shares}


class Worker:
    """What this process trains with for one run: the config, trainers on the run's model (one per base-weight
    quantization its clients load), and the data of each client (the run's partitions, or the node's own)."""

    def __init__(self, config: RunConfig, data_path: str | None, node_quantization: str | None = None) -> None:
        self.config = config
        self.node_quantization = node_quantization
        self.client_tiers = assign_tiers(config.federation.num_clients, config.tiers, config.seed)
        build = config
        if node_quantization:  # the node's model is built in its own quantization from the start: a device that
            check_available(node_quantization, f"node config '{NODE_QUANTIZATION_KEY}'")  # cannot hold the other
            build = config.model_copy(deep=True)
            build.model.quantization = node_quantization
        if data_path is None:
            built: Experiment = build_federation(build)
            self.client_data = built.client_data
            self.client_test = built.client_test
        else:  # the node's data, less its local test split (`federation.local_test`)
            built = build_node_experiment(build, data_path)
            share, seed = config.federation.local_test, config.seed
            self.client_data = lambda client_id: split_local_test(built.train, share, seed, client_id)[0]
            self.client_test = lambda client_id: split_local_test(built.train, share, seed, client_id)[1]
        self.trainers = TrainerPool(built.task, built.model, build.model.quantization, built.layout, config.train)

    def trainer(self, client_id: int) -> LocalTrainer:
        """The trainer of a client: on the node's own quantization (`--node-config quantization=...`), else
        its tier's, else the run's."""
        tier = self.config.tiers[self.client_tiers[client_id]]
        quantization = self.node_quantization or resolve_quantization(tier.quantization, self.config)
        return self.trainers.trainer(quantization)


# (run config JSON, node data path, node quantization) -> this process's worker
_WORKER: dict[tuple[str, str | None, str | None], Worker] = {}


def worker(config_json: str, data_path: str | None = None, node_quantization: str | None = None) -> Worker:
    """The worker of this process for a run config, node data and node quantization (built on first use)."""
    key = (config_json, data_path, node_quantization)
    if key not in _WORKER:
        _WORKER.clear()  # a new run: drop the previous model
        quiet_libraries()  # no per-split progress bars from every worker
        config = config_from_dict(json.loads(config_json))
        if config.flower.node_data and data_path is None:
            raise FedHelloError(
                f"the run trains on the nodes' own data and this SuperNode has none (fix: start it with "
                f"--node-config '{NODE_DATA_KEY}=/path/to/data ...')"
            )
        _WORKER[key] = Worker(config, data_path if config.flower.node_data else None, node_quantization)
    return _WORKER[key]


def node_data_path(context: Context) -> str | None:
    """The node's own data (`--node-config data-path=...`), if it has any."""
    path = context.node_config.get(NODE_DATA_KEY)
    return str(path) if path else None


def node_partition(context: Context) -> tuple[int, int]:
    """(partition-id, num-partitions) of this SuperNode from its node config."""
    node = context.node_config
    if PARTITION_ID not in node or NUM_PARTITIONS not in node:
        raise FedHelloError("SuperNode has no partition: start it with --node-config 'partition-id=I num-partitions=K'")
    return int(node[PARTITION_ID]), int(node[NUM_PARTITIONS])


@app.query()
def query(msg: Message, context: Context) -> Message:
    """Tell the server which partition this node serves."""
    partition, partitions = node_partition(context)
    info = {PARTITION_ID: partition, NUM_PARTITIONS: partitions, LOCAL_DATA: node_data_path(context) is not None}
    return Message(RecordDict({"node": ConfigRecord(info)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the requested client's plan from the sent global adapter; reply with the plan's tensors and the
    metrics the node shares. A failure's text (file paths, labels, columns) leaves the node only if it shares
    "errors"; otherwise the server learns only that this node failed, and the node's log keeps the reason."""
    return guarded(msg, context, lambda shares: Message(update_content(train_task(msg, context, shares)), reply_to=msg))


def guarded(msg: Message, context: Context, work: Callable[[set[str]], Message], what: str = "training") -> Message:
    """`work(shares)`'s reply; a failure's text leaves the node only if it shares "errors" (`train`)."""
    try:
        config_json = str(msg.content.config_records["task"]["run-config"])
    except (KeyError, TypeError):
        config_json = None
    shares = node_shares(context, config_json)
    try:
        return work(shares)
    except Exception as err:
        if "errors" in shares:
            raise
        print(f"fedhello: {what} failed on this node: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        raise FedHelloError(
            f"{what} failed on this node; its reason stays there (the node does not share 'errors': "
            "flower.node_shares / --node-config shares)"
        ) from None


SECURE = "secure aggregation"  # what a failing protocol stage is called in its error


@app.query("secagg_setup")
def secagg_setup(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 0: this client's public keys (`fedhello.secure`)."""
    return guarded(msg, context, lambda shares: secagg_stage(secagg.SETUP, msg, context, shares), SECURE)


@app.query("secagg_share_keys")
def secagg_share_keys(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 1: this client's secret shares, encrypted for their recipients."""
    return guarded(msg, context, lambda shares: secagg_stage(secagg.SHARE_KEYS, msg, context, shares), SECURE)


@app.train("secagg_masked_input")
def secagg_masked_input(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 2: train the plan, then reply with the change masked, and the shared metrics."""
    return guarded(msg, context, lambda shares: secagg_stage(secagg.MASKED_INPUT, msg, context, shares))


@app.query("secagg_unmask")
def secagg_unmask(msg: Message, context: Context) -> Message:
    """Secure aggregation, stage 3: shares of the survivors' seeds and the dropped clients' mask keys."""
    return guarded(msg, context, lambda shares: secagg_stage(secagg.UNMASK, msg, context, shares), SECURE)


def secagg_stage(stage: str, msg: Message, context: Context, shares: set[str]) -> Message:
    """Answer one secure-aggregation stage for the client the message names, its secrets in `context.state`."""
    client_id = content_client(msg.content)
    check_serves(context, client_id)
    state = load_state(context, client_id)
    payload = read_payload(msg.content)
    if stage != secagg.MASKED_INPUT:
        reply = secagg.handle(stage, payload, state, client_id=client_id)
        save_state(context, client_id, state)
        return Message(payload_content(reply, client_id), reply_to=msg)
    task = read_train_content(msg.content)
    if task.client_id != client_id:
        raise FedHelloError(f"secure aggregation: a train task for client {task.client_id} came as {client_id}'s")
    update = train_task(msg, context, shares)
    delta = changes(task.state, update)
    reply = secagg.handle(stage, payload, state, client_id=client_id, delta=delta, rng=rounding_rng(task.seed))
    save_state(context, client_id, state)
    metrics = {"num-samples": int(update.num_samples), **{k: float(v) for k, v in update.metrics.items()}}
    return Message(with_metrics(payload_content(reply, client_id), metrics), reply_to=msg)


def client_store(task: TrainTask, context: Context) -> ClientStore | None:
    """Where this node keeps its clients' personal state: the folder the server names (flower-sim, under the run
    folder), else the node's own `--node-config state-dir=...` (flower-deploy). A plan with personal parts and
    neither is refused with the fix."""
    folder = task.state_dir or context.node_config.get(STATE_DIR)
    if folder:
        return ClientStore(str(folder))
    if task.plan.personal:
        raise FedHelloError(
            f"the method keeps a personal part on each client and this SuperNode has no folder for it (fix: start "
            f"it with --node-config '{STATE_DIR}=/path/on/the/node ...')"
        )
    return None


def check_serves(context: Context, client_id: int) -> None:
    """Refuse a client this node does not serve (another partition, or not the one client of a node's own data)."""
    partition, partitions = node_partition(context)
    data_path = node_data_path(context)
    if client_id % partitions != partition or (data_path is not None and client_id != partition):
        raise FedHelloError(f"client {client_id} is not served by partition {partition} of {partitions}")


def train_task(msg: Message, context: Context, shares: set[str]) -> ClientUpdate:
    """Train the client of a train message (the plain one, or secure aggregation's masked-input stage): its update
    with the metrics the node shares."""
    task = read_train_content(msg.content)
    check_serves(context, task.client_id)
    data_path = node_data_path(context)
    node_quantization = context.node_config.get(NODE_QUANTIZATION_KEY)
    work = worker(task.config_json, data_path, str(node_quantization) if node_quantization else None)
    config = work.config
    # as many threads as cores reserved per client, so parallel workers do not oversubscribe the machine
    torch.set_num_threads(max(1, int(config.flower.client_cpus)))
    lr = round_lr(config.train, task.round_num, config.federation.rounds)
    data = work.client_data(task.client_id)
    update = work.trainer(task.client_id).train(
        task.client_id,
        task.plan,
        task.state,
        data,
        task.seed,
        lr=lr,
        round_num=task.round_num,
        store=client_store(task, context),
        local_test=work.client_test(task.client_id) if local_test_due(config.federation, task.round_num) else None,
    )
    update.metrics = shared_metrics(update.metrics, shares)
    return update
