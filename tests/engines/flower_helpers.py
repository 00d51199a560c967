"""Helpers shared by the Flower engine tests: run-folder comparison and leftover-process checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from fedhello.engines.flower.processes import process_table


def adapter_tensors(run_dir: Path) -> dict[str, torch.Tensor]:
    (path,) = (run_dir / "adapter").glob("*.safetensors")
    return load_file(str(path))


def max_adapter_difference(a: Path, b: Path) -> float:
    left, right = adapter_tensors(a), adapter_tensors(b)
    assert set(left) == set(right) and left
    return max((left[k] - right[k]).abs().max().item() for k in left)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def files(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir()}


def assert_same_run(local: Path, flower: Path) -> None:
    """Same files (plus the engine's flower.log), same allocations, same accuracies, adapters within 1e-5."""
    assert files(flower) - {"flower.log"} == files(local), "different run-folder files"
    assert (flower / "allocations.csv").read_text() == (local / "allocations.csv").read_text(), "allocations differ"
    ours, theirs = metrics(local), metrics(flower)
    assert [r["round"] for r in ours] == [r["round"] for r in theirs], "different rounds"
    for a, b in zip(ours, theirs, strict=True):
        clients = [[(c["id"], c["layers"], c["num_samples"]) for c in r["clients"]] for r in (a, b)]
        assert clients[0] == clients[1], f"round {a['round']}: clients (id, layers, samples) {clients}"
        assert abs(a["accuracy"] - b["accuracy"]) < 1e-6, f"round {a['round']}: accuracies differ"
        assert (a["bytes_up"], a["bytes_down"]) == (b["bytes_up"], b["bytes_down"]), f"round {a['round']}: bytes"
    assert max_adapter_difference(local, flower) < 1e-5, "final adapters differ"


def two_node_config(tiny_config):  # noqa: ANN001, ANN201
    """The tiny config on 2 SuperNodes: 2 clients, both sampled, 2 rounds."""
    config = tiny_config.model_copy(deep=True)
    config.federation.num_clients = 2
    config.federation.clients_per_round = 2
    config.federation.rounds = 2
    config.flower.supernodes = 2
    return config


def processes_in_groups(pgids: list[int]) -> list[int]:
    """Pids of live (non-zombie) processes whose process group is one of `pgids`."""
    return [
        pid
        for pid, fields in process_table().items()
        if int(fields[2]) in pgids and fields[0] != "Z" and pid != os.getpid()
    ]


def running(pids: set[int]) -> list[int]:
    """The pids of `pids` that are still running (not gone, not zombies)."""
    alive = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            alive.append(pid)
    return alive


def started_pids(deployment) -> list[int]:  # noqa: ANN001
    """Pids (= process group ids) of every process the deployment started, running or not."""
    return [p.pid for p in [deployment.superlink, *deployment.nodes] if p is not None]


def assert_nothing_left(deployment, stopped: set[int]) -> None:  # noqa: ANN001
    """No process of the deployment's groups, nor any process its `stop()` reported, is still running."""
    assert started_pids(deployment), "the deployment had started processes"
    assert deployment.pids() == [], "every started process is stopped and reaped"
    assert processes_in_groups(started_pids(deployment)) == []
    assert stopped and running(stopped) == []
