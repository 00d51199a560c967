"""A deployment whose SuperNodes hold their own data (`flower.node_data`): each node trains only its own file,
the server never opens one, and a node whose data carries an unknown label is lost while the rounds go on.

Which process opens which file is read from Python's audit hooks: a `sitecustomize` put on the PYTHONPATH of
every Flower process logs each `open` of a path under the node-data folder with the opener's command line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from flower_helpers import assert_nothing_left, metrics

from fedhello.engines import ENGINES
from fedhello.errors import FedHelloError
from fedhello.rundir import FLOWER_LOGS_DIR, read_summary

SITECUSTOMIZE = """
import os

_LOG, _MARK = os.environ.get("FEDHELLO_OPEN_LOG"), os.environ.get("FEDHELLO_OPEN_MARK")


def _command():
    with open("/proc/self/cmdline", "rb") as f:
        return f.read().replace(b"\\0", b" ").decode(errors="replace").strip()


def _hook(event, args):
    if event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.fsdecode(args[0])
    if _MARK in path:
        fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{path}\\t{_command()}\\n".encode())
        os.close(fd)


if _LOG and _MARK:
    import sys

    sys.addaudithook(_hook)
"""


def write_node_file(path: Path, labels: list[str]) -> Path:
    texts = [f"{label} sample {i} match bank chip song" for i, label in enumerate(labels)]
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return path


def openers(log: Path) -> list[tuple[str, str]]:
    """(path, command line) of every logged open."""
    lines = log.read_text().splitlines() if log.exists() else []
    return [tuple(line.split("\t", 1)) for line in lines]  # type: ignore[misc]


def test_nodes_train_only_their_own_files_and_the_server_never_opens_them(
    tiny_config, tmp_path, started, monkeypatch, capfd
):
    data = tmp_path / "node-data"
    data.mkdir()
    files = [
        write_node_file(data / "node0.csv", ["sport", "money"] * 12),  # 24 rows, two classes
        write_node_file(data / "node1.csv", ["tech", "music", "tech"] * 13),  # 39 rows, two other classes
        write_node_file(data / "node2.csv", ["sport", "weather"] * 5),  # a class the run does not have
    ]
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    log = tmp_path / "opens.log"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("FEDHELLO_OPEN_LOG", str(log))
    monkeypatch.setenv("FEDHELLO_OPEN_MARK", str(data))

    config = tiny_config.model_copy(deep=True)
    config.federation.num_clients = config.federation.clients_per_round = config.flower.supernodes = 3
    config.federation.rounds = 2
    config.flower.node_data = True
    config.flower.node_data_paths = [str(f) for f in files]
    # node 2 answers every round with its label error: the run finishes, its results are kept, and it fails
    with pytest.raises(FedHelloError, match=r"client\(s\) \[2\] lost in every round .*labels \['weather'\]"):
        ENGINES.get("flower-deploy")().run(config, tmp_path / "run", show_progress=False)

    run = tmp_path / "run"
    assert read_summary(run)["rounds"] == 2
    for record in metrics(run):
        assert not record["skipped"]
        assert {c["id"]: c["num_samples"] for c in record["clients"]} == {0: 24, 1: 39}, "each node's own rows"
        (lost,) = record["failed_clients"]  # the node's reason, not a bare "no reply"
        assert lost["id"] == 2 and "labels ['weather'] are not among the run's classes" in lost["detail"]
    flower_log = (run / "flower.log").read_text()
    assert flower_log.count("with its own data") == 3
    assert "lost client 2" in flower_log and "labels ['weather'] are not among the run's classes" in flower_log
    assert "run failed: client(s) [2] lost in every round" in flower_log
    terminal = capfd.readouterr().err  # printed as the rounds went
    for round_num in (1, 2):
        assert f"flower: round {round_num}: lost client 2 (node" in terminal
    # `flwr run --stream` (what a user of `flwr run` sees) showed the losses and the failure
    stream = (run / FLOWER_LOGS_DIR / "flwr-run.log").read_text()
    assert "lost client 2" in stream and "lost in every round" in stream

    (deployment,), stopped = started
    opened = openers(log)
    assert opened, "the audit hook saw the nodes read their files"
    for path, command in opened:
        # a node's ClientApps (fedhello's executor, or flwr-clientapp) connect to that node's runtime API port
        nodes = [
            i for i, port in enumerate(deployment.node_ports) if f"--runtime-api-address 127.0.0.1:{port}" in command
        ]
        assert nodes, f"{path} was opened by a process that runs no node's ClientApp: {command}"
        assert Path(path).name == f"node{nodes[0]}.csv", f"node {nodes[0]}'s ClientApp opened {path}"
    assert {Path(p).name for p, _ in opened} == {f.name for f in files}, "every node read its file"
    assert_nothing_left(deployment, stopped[id(deployment)])
