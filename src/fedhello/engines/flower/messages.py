"""What travels between the ServerApp and the ClientApps: Flower records holding only plain data.

A train message holds the global adapter as an `ArrayRecord` (numpy arrays keyed by parameter name)
and a `ConfigRecord` with the client id, round, seed, the plan (JSON) and the run config (JSON) so a
worker can build the same federation; a reply holds exactly the plan's tensors plus a `MetricRecord`.
Nothing is pickled: a peer can only send arrays, numbers and strings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedhello.config import RunConfig
from fedhello.plan import ClientUpdate, Plan

TRAIN, QUERY = "train", "query"
PARTITION_ID, NUM_PARTITIONS = "partition-id", "num-partitions"
STATE_DIR = "state-dir"  # a train message's / a node config's folder of per-client state (`training.store`)
LOCAL_DATA = "local-data"  # a node's answer to the partition query: whether it holds data of its own


@dataclass(frozen=True)
class TrainTask:
    """One client's job for one round, as the ClientApp reads it."""

    client_id: int
    round_num: int
    seed: int
    plan: Plan
    config_json: str
    state: dict[str, torch.Tensor]
    state_dir: str | None = None  # where the client keeps its personal state (flower-sim: under the run folder)


def state_to_record(state: dict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord(torch_state_dict={name: t.detach().cpu() for name, t in state.items()})


def record_to_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(array.numpy().copy()) for name, array in record.items()}


def train_content(task: TrainTask, arrays: ArrayRecord | None = None) -> RecordDict:
    """Content of a train message; pass `arrays` to share one encoded global state between messages."""
    config = ConfigRecord(
        {
            "client-id": task.client_id,
            "round": task.round_num,
            "seed": task.seed,
            "plan": json.dumps(task.plan.to_json()),
            "run-config": task.config_json,
        }
    )
    if task.state_dir is not None:
        config[STATE_DIR] = task.state_dir
    return RecordDict({"global": arrays if arrays is not None else state_to_record(task.state), "task": config})


def read_train_content(content: RecordDict) -> TrainTask:
    config = content.config_records["task"]
    return TrainTask(
        client_id=int(config["client-id"]),
        round_num=int(config["round"]),
        seed=int(config["seed"]),
        plan=Plan.from_json(json.loads(str(config["plan"]))),
        config_json=str(config["run-config"]),
        state=record_to_state(content.array_records["global"]),
        state_dir=str(config[STATE_DIR]) if STATE_DIR in config else None,
    )


def update_content(update: ClientUpdate) -> RecordDict:
    """Content of a train reply: exactly the trained tensors, the sample count and the client's metrics."""
    metrics = {"num-samples": int(update.num_samples), **{k: float(v) for k, v in update.metrics.items()}}
    return RecordDict(
        {
            "update": state_to_record(update.tensors),
            "metrics": MetricRecord(metrics),
            "client": ConfigRecord({"client-id": update.client_id}),
        }
    )


def read_update_content(content: RecordDict, plan: Plan) -> ClientUpdate:
    """Rebuild the update; the plan is the server's own (a client cannot claim a different one)."""
    metrics = dict(content.metric_records["metrics"])
    num_samples = int(metrics.pop("num-samples"))
    return ClientUpdate(
        client_id=int(content.config_records["client"]["client-id"]),
        plan=plan,
        tensors=record_to_state(content.array_records["update"]),
        num_samples=num_samples,
        metrics={k: float(v) for k, v in metrics.items()},
    )


def config_json(config: RunConfig) -> str:
    return config.model_dump_json()
