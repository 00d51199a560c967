"""The Flower way, as docs/flower.md documents it: `flwr run .` (this repository's own `[tool.flwr.app]`)
against a SuperLink the user started, `--resume` through the ServerApp, and `flwr run .` against Flower's own
local simulation federation."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import tomli_w
from flower_helpers import assert_nothing_left, max_adapter_difference, metrics

from fedhello.config import dump_config
from fedhello.engines import ENGINES
from fedhello.engines.flower.app import RunRequest
from fedhello.engines.flower.deploy import LocalDeployment, flower_env
from fedhello.engines.flower.processes import descendants, executable, free_port, is_running, process_table

ROOT = Path(__file__).resolve().parents[2]  # the repository: its pyproject.toml is the Flower app


def small_config(tiny_config, tmp_path):  # noqa: ANN001, ANN201
    config = tiny_config.model_copy(deep=True)
    config.federation.num_clients = config.federation.clients_per_round = config.flower.supernodes = 2
    config.federation.rounds = 2
    config.checkpoint.every = 1
    path = tmp_path / "config.yaml"
    dump_config(config, path)
    return config, path


def wait_for(condition, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        time.sleep(0.2)


def test_flwr_run_dot_survives_superlink_restarts_during_a_round(tiny_config, tmp_path, started):
    """`flwr run .` (3 rounds) against a SuperLink the user started with `--database`, SuperNodes started with
    fedhello's launcher. The SuperLink is killed (SIGKILL) while both SuperNodes train round 2 and started again on
    its port and database: the first `flwr run` fails, the same two node ids are online again (their registrations
    were in the database). It is then killed and started without its state (a lost database): the SuperLink no
    longer knows the nodes, refuses them (HTTP 401, Flower stops such a node) and their launchers start them again,
    registered anew. `resume=true` then finishes the run folder through that SuperLink, equal to an uninterrupted
    local run, with the report the ServerApp writes."""
    config, path = small_config(tiny_config, tmp_path)
    run_dir = tmp_path / "run"
    request = RunRequest(config=str(path), overrides=["federation.rounds=3"], run_dir=str(run_dir), report=False)
    with LocalDeployment(2, tmp_path / "deploy", database=tmp_path / "superlink.db") as deployment:  # logs kept
        online = lambda: {n["node-id"] for n in deployment.list_nodes() if n["status"] == "online"}  # noqa: E731
        nodes = online()
        logs = [deployment.logs / f"supernode-{i}.log" for i in range(2)]
        first: list[subprocess.CompletedProcess] = []
        submit = threading.Thread(target=lambda: first.append(deployment.run_app(request, 600, ROOT)), daemon=True)
        submit.start()
        # received: the partition query, round 1's and round 2's train messages; round 2 trains (seconds here)
        received = lambda log: log.read_text().count("Received successfully")  # noqa: E731
        wait_for(lambda: all(received(log) >= 3 for log in logs), 300, "both SuperNodes received round 2")
        deployment.restart_superlink(signal.SIGKILL)  # a crash of the SuperLink process alone
        submit.join(120)
        assert first and first[0].returncode != 0, "the first `flwr run` ended with its SuperLink"
        wait_for(lambda: online() == nodes, 120, "the same SuperNodes online at the restarted SuperLink")

        deployment.database = None  # the next SuperLink starts without the state of the last
        deployment.restart_superlink(signal.SIGKILL)
        wait_for(lambda: len(online()) == 2, 120, "two SuperNodes online at a SuperLink that lost its state")
        assert not online() & nodes, "the launchers started their nodes again, registered anew"
        for log in logs:
            text = log.read_text()
            assert "fedhello supernode: the SuperLink refused this node (HTTP 401" in text
            assert "fedhello supernode: the SuperLink dropped this node" in text and "starting it again" in text

        resumed = dataclasses.replace(request, resume=True, report=True)
        second = deployment.run_app(resumed, timeout=600, app=ROOT)
        assert second.returncode == 0
        assert all(node.poll() is None for node in deployment.nodes), "no SuperNode launcher exited"
        assert (run_dir / "report" / "report.html").is_file(), "`flwr run` gets the report `fedhello run` writes"
        assert "report: " in (run_dir / "flower.log").read_text()
    (deployment,), stopped = started
    assert_nothing_left(deployment, stopped[id(deployment)])

    config.federation.rounds = 3
    ENGINES.get("local")().run(config, tmp_path / "local", show_progress=False)
    ours, theirs = metrics(tmp_path / "local"), metrics(run_dir)
    assert [r["round"] for r in theirs] == [1, 2, 3], "the resumed run finished the run folder"
    for a, b in zip(ours, theirs, strict=True):
        assert abs(a["accuracy"] - b["accuracy"]) < 1e-6, f"round {a['round']} differs from an uninterrupted run"
    assert max_adapter_difference(tmp_path / "local", run_dir) < 1e-5


def local_superlinks(port: int) -> list[int]:
    """Pids of `flower-superlink` processes serving `port` (this test's own free port)."""
    found = []
    for pid in process_table():
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"flower-superlink") for part in command) and str(port).encode() in command:
            found.append(pid)
    return found


def stop_local_superlink(port: int) -> set[int]:
    """`flwr run` against a local federation leaves a detached `flower-superlink --simulation` running: stop it
    and what it started; returns their pids."""
    links = local_superlinks(port)
    family = descendants(links) | set(links)
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(is_running(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.1)
    return family


def test_flwr_run_dot_on_flowers_local_simulation(tiny_config, tmp_path):
    _, path = small_config(tiny_config, tmp_path)
    home, run_dir = tmp_path / "flwr-home", tmp_path / "run"
    home.mkdir()
    http_port, control_port = free_port(), free_port()
    federation = {
        "superlink": {
            "default": "local-sim",
            "local-sim": {
                "address": ":local-in-memory:",
                "options": {"num-supernodes": 2, "backend": {"client-resources": {"num-cpus": 1}}},
            },
        }
    }
    (home / "config.toml").write_text(tomli_w.dumps(federation))
    env = {
        **flower_env(home),
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(http_port),
        "FLWR_LOCAL_CONTROL_API_PORT": str(control_port),
    }
    run_config = tmp_path / "run-config.toml"
    request = RunRequest(config=str(path), run_dir=str(run_dir), report=False)  # the report: the test above
    run_config.write_text(tomli_w.dumps(request.to_run_config()))
    try:
        done = subprocess.run(
            [executable("flwr"), "run", str(ROOT), "local-sim", "--run-config", str(run_config), "--stream"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        stopped = stop_local_superlink(http_port)
    assert stopped, "flwr started a local SuperLink"
    assert not [pid for pid in stopped if is_running(pid)], "nothing is left behind"
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    records = metrics(run_dir)
    assert [r["round"] for r in records] == [1, 2]
    assert all(len(r["clients"]) == 2 and not r["skipped"] for r in records)
    assert (run_dir / "summary.json").exists()
