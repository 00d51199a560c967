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

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

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
from fedhello.errors import FedHelloError
from fedhello.experiment import Experiment, build_node_experiment
from fedhello.models.quantize import NODE_QUANTIZATION_KEY, check_available
from fedhello.models.quantize import resolve as resolve_quantization
from fedhello.plan import GRAD_NORM, LOCAL_TEST
from fedhello.privacy.mechanism import UNCLIPPED
from fedhello.runtime import quiet_libraries
from fedhello.server.federation import assign_tiers, build_federation
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
    try:
        config_json = str(msg.content.config_records["task"]["run-config"])
    except (KeyError, TypeError):
        config_json = None
    shares = node_shares(context, config_json)
    try:
        return _train(msg, context, shares)
    except Exception as err:
        if "errors" in shares:
            raise
        print(f"fedhello: training failed on this node: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
        raise FedHelloError(
            "training failed on this node; its reason stays there (the node does not share 'errors': "
            "flower.node_shares / --node-config shares)"
        ) from None


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


def _train(msg: Message, context: Context, shares: set[str]) -> Message:
    task = read_train_content(msg.content)
    partition, partitions = node_partition(context)
    data_path = node_data_path(context)
    if task.client_id % partitions != partition or (data_path is not None and task.client_id != partition):
        raise FedHelloError(f"client {task.client_id} is not served by partition {partition} of {partitions}")
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
    return Message(update_content(update), reply_to=msg)
