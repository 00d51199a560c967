"""fedhello's `flower-supernode` entry point: Flower's SuperNode with its fixed idle sleeps capped."""

from __future__ import annotations

import time

from fedhello.engines.flower.app import OBJECT_PULL_RETRY, shorten_object_pull_retry
from fedhello.engines.flower.supernode import _CappedSleep


def test_sleeps_are_capped_and_the_rest_of_time_is_unchanged():
    capped = _CappedSleep(0.01)
    started = time.monotonic()
    capped.sleep(3)  # Flower's idle poll
    assert time.monotonic() - started < 1.0
    assert capped.time is time.time and capped.monotonic is time.monotonic


def test_object_pulls_retry_sooner_in_this_process(monkeypatch):
    from flwr.supercore.inflatable import inflatable_utils

    for pull in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        monkeypatch.setattr(pull, "__kwdefaults__", dict(pull.__kwdefaults__))  # restored after the test
    shorten_object_pull_retry()
    for pull in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        assert {k: pull.__kwdefaults__[k] for k in OBJECT_PULL_RETRY} == OBJECT_PULL_RETRY
        assert pull.__kwdefaults__["initial_backoff"] < 1  # Flower's own default is 1 s


def test_the_launcher_starts_an_executor_only_for_process_isolation():
    from fedhello.engines.flower.supernode import executor_command

    node = ["--insecure", "--superlink", "127.0.0.1:9092", "--node-config", "partition-id=0 num-partitions=2"]
    command = executor_command([*node, "--isolation", "process", "--port", "9195"], node_pid=4321)
    assert command[1:3] == ["-m", "fedhello.engines.flower.executor"]
    assert command[command.index("--runtime-api-address") + 1] == "127.0.0.1:9195", "the node's own port"
    assert command[-2:] == ["--parent-pid", "4321"] and "--insecure" in command
    bind_all = executor_command([*node, "--isolation=process", "--host", "0.0.0.0"], node_pid=1)
    assert "127.0.0.1:9094" in bind_all, "Flower's default port, reached on loopback"
    tls = executor_command([*node, "--isolation", "process", "--ssl-ca-certfile", "/ca.crt"], node_pid=1)
    assert "--insecure" not in tls and tls[tls.index("--root-certificates") + 1] == "/ca.crt"
    assert executor_command(node, node_pid=1) is None, "Flower's subprocess isolation launches its own apps"
    assert executor_command([*node, "--isolation", "process", "--no-executor"], node_pid=1) is None


def test_an_executor_exits_with_its_node_in_one_line(tmp_path):
    """`--parent-pid`: the executor exits as soon as its SuperNode is gone (here a stand-in process, killed)."""
    import signal
    import subprocess
    import sys

    from fedhello.engines.flower.processes import free_port, is_running

    node = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    port = free_port()  # nothing listens: the executor is still waiting for its node's runtime API
    log = tmp_path / "executor.log"
    with log.open("w") as out:
        executor = subprocess.Popen(
            [sys.executable, "-m", "fedhello.engines.flower.executor", "--runtime-api-address", f"127.0.0.1:{port}"]
            + ["--insecure", "--parent-pid", str(node.pid)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "serving the SuperNode" not in log.read_text() and time.monotonic() < deadline:  # imports done
            time.sleep(0.2)
        assert executor.poll() is None, log.read_text()
        node.send_signal(signal.SIGKILL)
        node.wait()  # reaped: a zombie would look alive to os.kill(pid, 0), Flower's own check
        started = time.monotonic()
        assert executor.wait(timeout=10) == 0
        assert time.monotonic() - started < 3, "at once, not after minutes of retries"
    finally:
        for proc in (node, executor):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert f"its SuperNode (pid {node.pid}) is gone" in text and "Traceback" not in text
    assert not is_running(executor.pid)


def test_the_launcher_restarts_a_node_that_ends_on_its_own_up_to_its_limit(monkeypatch, capsys):
    """A stand-in node that comes up (its runtime API port listens) and ends with `DROPPED` (the SuperLink refused
    its heartbeat) is started again, `--max-restarts` times, with one line each; Flower's error status 1 is not."""
    import subprocess
    import sys

    from fedhello.engines.flower import supernode
    from fedhello.engines.flower.processes import free_port

    port = free_port()
    node = (
        "import socket, sys, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(1); sys.exit(int(sys.argv[1]))"
    )
    monkeypatch.setattr(supernode, "BACKOFF_S", (0.01, 0.01))
    monkeypatch.setattr(supernode.signal, "signal", lambda *_: None)  # pytest keeps its own handlers
    for status, runs in ((supernode.DROPPED, 3), (1, 1)):
        launcher = supernode._Supervisor(["--port", str(port)], executor=False, max_restarts=2)
        started: list[subprocess.Popen] = []

        def start(status: int = status, started: list = started) -> subprocess.Popen:
            started.append(subprocess.Popen([sys.executable, "-c", node, str(status)]))
            return started[-1]

        monkeypatch.setattr(launcher, "start_node", start)
        assert launcher.run() == status
        assert len(started) == runs
    err = capsys.readouterr().err
    assert err.count("the SuperLink dropped this node (it refused its heartbeat: restarted?); starting it again") == 2
    assert "no restart left (--max-restarts 2)" in err
