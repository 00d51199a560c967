"""A real Flower deployment on loopback: a SuperLink and 2 SuperNodes as separate processes.

Each test checks that nothing it started outlives it (process groups of the SuperLink and SuperNodes),
also when the run fails. One ClientApp process is spawned per message in Flower 1.42 deployments, so
the configs keep one client per node and round.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
from flower_helpers import assert_nothing_left, assert_same_run, metrics, processes_in_groups, two_node_config

from fedhello.config import dump_config
from fedhello.engines import ENGINES
from fedhello.engines.flower.app import RunRequest
from fedhello.engines.flower.deploy import LocalDeployment
from fedhello.engines.flower.processes import descendants, is_running
from fedhello.engines.flower.supernode import NODE_PROCESS


def test_deploy_two_supernodes_matches_local_run(tiny_config, tmp_path, started):
    """A deployment equals the in-process run -- with secure aggregation on, so one deployment also checks the
    protocol's four message exchanges a round, each client's secrets kept in its node's `context.state` between
    them (tests/secure checks the secure run against a plain one; flower-sim's parity covers the plain messages)."""
    config = two_node_config(tiny_config)
    config.secure.enabled = True
    ENGINES.get("local")().run(config, tmp_path / "local", show_progress=False)
    summary = ENGINES.get("flower-deploy")().run(config, tmp_path / "deploy", show_progress=False)

    assert summary["rounds"] == 2
    assert_same_run(tmp_path / "local", tmp_path / "deploy")
    for record in metrics(tmp_path / "deploy"):  # both clients' masked uploads were summed, none reached in clear
        assert [c["id"] for c in record["clients"]] == [0, 1] and record["bytes_up"] == 0, record
        assert all(c["secure_bytes_up"] > 0 for c in record["clients"]), record
    log = (tmp_path / "deploy" / "flower.log").read_text()
    assert "2 SuperNodes serve all 2 partitions" in log and "lost client" not in log
    (deployment,), stopped = started
    assert_nothing_left(deployment, stopped[id(deployment)])
    assert not deployment.workdir.exists(), "the private FLWR_HOME is removed"


def test_processes_are_stopped_when_the_run_fails(tiny_config, tmp_path, started, monkeypatch):
    def crash(self, request, timeout=None, follow=None):
        assert processes_in_groups(self.pids()), "the deployment is up when the app is submitted"
        raise RuntimeError("injected failure")

    monkeypatch.setattr(LocalDeployment, "run_app", crash)
    with pytest.raises(RuntimeError, match="injected failure"):
        ENGINES.get("flower-deploy")().run(two_node_config(tiny_config), tmp_path / "run", show_progress=False)
    (deployment,), stopped = started
    assert_nothing_left(deployment, stopped[id(deployment)])


def test_killed_supernode_loses_its_client_and_the_run_finishes(tiny_config, tmp_path, started):
    config = two_node_config(tiny_config)
    config.reliability.min_clients = 1
    run_dir = tmp_path / "run"
    # the minimum heartbeat Flower accepts: the SuperLink counts a silent node lost after about 20 s, not 60 s
    with LocalDeployment(2, heartbeat_s=10) as deployment:
        dump_config(config, deployment.workdir / "config.yaml")
        request = RunRequest(config=str(deployment.workdir / "config.yaml"), run_dir=str(run_dir), report=False)
        runner = threading.Thread(target=deployment.run_app, args=(request,), kwargs={"timeout": 400})
        runner.start()
        log = run_dir / "flower.log"
        deadline = time.monotonic() + 300
        while not (log.exists() and "round 1: sent" in log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert log.exists(), "the ServerApp started round 1"
        launcher = deployment.nodes[1]  # SuperNode 1: partition 1 = client 1
        # the launcher's children: the Flower SuperNode and the ClientApp executor it started beside it
        children = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().decode() for pid in descendants([launcher.pid])}
        (node,) = [pid for pid, command in children.items() if NODE_PROCESS in command]
        (executor,) = [pid for pid, command in children.items() if NODE_PROCESS not in command]
        # the machine dies: launcher and node at once, not their process groups; the executor must notice
        launcher.send_signal(signal.SIGKILL)
        os.kill(node, signal.SIGKILL)
        launcher.wait()
        killed, killed_at = time.monotonic(), time.time()
        while is_running(executor) and time.monotonic() - killed < 10:
            time.sleep(0.1)
        assert not is_running(executor), "the executor exits with its node"
        assert time.monotonic() - killed < 5, "at once, not after Flower's minutes of retries"
        runner.join(timeout=420)
        assert not runner.is_alive()
    node_log = (deployment.logs / "supernode-1.log").read_text()
    assert f"its SuperNode (pid {node}) is gone; the executor exits with it" in node_log
    assert "Traceback" not in node_log
    _, stopped = started
    assert_nothing_left(deployment, stopped[id(deployment)])

    records = metrics(run_dir)
    assert [r["round"] for r in records] == [1, 2], "the run finished"
    for record in records:
        assert [c["id"] for c in record["clients"]] == [0], "each round completed with the remaining client"
        assert record["accuracy"] is not None
    text = log.read_text()
    assert "round 1: lost client 1 (node" in text and "partition 1)" in text
    (lost,) = [line for line in text.splitlines() if "round 1: lost client 1" in line]
    noticed = datetime.fromisoformat(lost.split()[0]).timestamp() - killed_at
    assert noticed < 40, f"counted lost {noticed:.0f} s after: two 10 s heartbeats, not Flower's 30 s ones"
    assert "round 2: lost client 1" in text
    assert (run_dir / "summary.json").exists()
