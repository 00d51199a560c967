"""The Flower ClientApp: trains one fedhello client per message with the shared `LocalTrainer`.

A worker process (a Ray actor in simulation, a `flwr-clientapp` process in deployment) builds the
federation once -- base model, task, data partitions -- and keeps it in a module-level cache, so the
model is loaded once per process, not once per client. The node serves the fedhello clients whose id
c satisfies c % num-partitions == partition-id (its `--node-config`; in simulation partition-id is the
virtual node's index and every node serves exactly one client).
"""

from __future__ import annotations

import json

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedhello.config import config_from_dict
from fedhello.engines.flower.messages import NUM_PARTITIONS, PARTITION_ID, read_train_content, update_content
from fedhello.errors import FedHelloError
from fedhello.runtime import quiet_libraries
from fedhello.server.federation import Federation, build_federation
from fedhello.training import LocalTrainer
from fedhello.training.schedule import round_lr

app = ClientApp()

_WORKER: dict[str, tuple[Federation, LocalTrainer]] = {}  # run config JSON -> this process's federation


def worker(config_json: str) -> tuple[Federation, LocalTrainer]:
    """The federation and trainer of this process for a run config (built on first use)."""
    if config_json not in _WORKER:
        _WORKER.clear()  # a new run: drop the previous model
        quiet_libraries()  # no per-split progress bars from every worker
        config = config_from_dict(json.loads(config_json))
        federation = build_federation(config)
        trainer = LocalTrainer(federation.model, federation.task, federation.layout, config.train)
        _WORKER[config_json] = (federation, trainer)
    return _WORKER[config_json]


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
    return Message(
        RecordDict({"node": ConfigRecord({PARTITION_ID: partition, NUM_PARTITIONS: partitions})}), reply_to=msg
    )


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the requested client's plan from the sent global adapter; reply with the plan's tensors."""
    task = read_train_content(msg.content)
    partition, partitions = node_partition(context)
    if task.client_id % partitions != partition:
        raise FedHelloError(f"client {task.client_id} is not served by partition {partition} of {partitions}")
    federation, trainer = worker(task.config_json)
    # as many threads as cores reserved per client, so parallel workers do not oversubscribe the machine
    torch.set_num_threads(max(1, int(federation.config.flower.client_cpus)))
    config = federation.config
    lr = round_lr(config.train, task.round_num, config.federation.rounds)
    data = federation.client_data(task.client_id)
    update = trainer.train(task.client_id, task.plan, task.state, data, task.seed, lr=lr)
    return Message(update_content(update), reply_to=msg)
