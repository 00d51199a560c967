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
    assert err.count("the SuperLink dropped this node (it no longer knows it: restarted?); starting it again") == 2
    assert "no restart left (--max-restarts 2)" in err


def _receive_a_message_whose_run_ends(node_config: dict, fleet_reply: BaseException) -> tuple:
    """Flower's SuperNode receives one train message of a known run with Flower's own node state and object store;
    pulling the message's objects from the SuperLink fails with `fleet_reply`. Returns (pulled run id, state,
    object store, message id, its task)."""
    import numpy as np
    from flwr.app import ArrayRecord, Message, RecordDict
    from flwr.supercore.inflatable.inflatable_object import get_object_tree
    from flwr.supercore.object_store import ObjectStoreFactory
    from flwr.supercore.run import Run
    from flwr.supernode import start_client_internal
    from flwr.supernode.nodestate import NodeStateFactory

    factory = NodeStateFactory(ObjectStoreFactory())
    state, store = factory.state(), factory.objectstore_factory.store()
    state.set_node_id(7)
    state.store_run(Run.create_empty(run_id=42))
    content = RecordDict({"arrays": ArrayRecord([np.ones(3, dtype=np.float32)])})
    message = Message(content, dst_node_id=7, message_type="train")  # run 42: TaskIdentity, set by the test
    message.metadata.__dict__["_message_id"] = message.object_id
    tree = get_object_tree(message)

    def pull_object(run_id: int, object_id: str) -> bytes:
        raise fleet_reply

    run_id = start_client_internal._pull_and_store_message(
        state=state,
        object_store=store,
        node_config=node_config,
        receive=lambda: (message, tree),
        get_run=None,
        get_fab=None,
        pull_object=pull_object,
        confirm_message_received=None,
        trusted_entities=None,
    )
    (task,) = state.get_tasks(run_ids=[42])
    return run_id, state, store, message.metadata.message_id, task


def test_a_message_whose_run_ends_while_it_is_received_is_released(monkeypatch):
    """Flower 1.42 leaves such a message (its run was no longer RUNNING when its objects were pulled: a restarted
    SuperLink) in the node's state with a pending task, which an executor would take and wait on while the next
    run's messages wait behind it; the launcher's node process deletes the message and finishes the task. A pull
    that fails otherwise is Flower's own cleanup, untouched."""
    from flwr.common.constant import Status, SubStatus
    from flwr.supercore.run import RunNotRunningException
    from flwr.supercore.task_identity import TaskIdentity
    from flwr.supernode import start_client_internal

    from fedhello.engines.flower import supernode

    for name, value in (("_run_id", 42), ("_node_id", 1), ("_task_id", 3)):  # as the ServerApp's message had
        monkeypatch.setattr(TaskIdentity, name, value)
    run_id, state, store, message_id, task = _receive_a_message_whose_run_ends({}, RunNotRunningException())
    assert run_id is None and task.status.status == Status.PENDING, "Flower still leaves the task behind"
    assert state.get_messages_legacy(run_ids=[42]), "and the message"

    monkeypatch.setattr(start_client_internal, "_pull_and_store_message", start_client_internal._pull_and_store_message)
    supernode.release_ignored_messages()
    supernode.release_ignored_messages()  # once is enough: a second call does not wrap again
    assert start_client_internal._pull_and_store_message.releases_ignored
    run_id, state, store, message_id, task = _receive_a_message_whose_run_ends({}, RunNotRunningException())
    assert run_id is None
    assert (task.status.status, task.status.sub_status) == (Status.FINISHED, SubStatus.FAILED)
    assert "run ended" in task.status.details
    assert not state.get_messages_legacy(run_ids=[42]) and store.get(message_id) is None
    assert state.claim_task(task.task_id) is None, "no executor can take it"

    _, state, _, _, task = _receive_a_message_whose_run_ends({}, ConnectionError("link down"))
    assert task.status.sub_status == SubStatus.FAILED and "Pulling message objects failed" in task.status.details


def test_a_heartbeat_interval_flower_would_refuse_is_one_line(capsys):
    import pytest

    from fedhello.engines.flower import supernode

    for value in ("5", "3600"):
        with pytest.raises(SystemExit) as exit_info:
            supernode.main(["--heartbeat-interval", value, "--insecure", "--superlink", "127.0.0.1:9092"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [
            f"fedhello supernode: --heartbeat-interval {value}: Flower's SuperLink accepts 10-1800 seconds"
        ]
    for flag, value, kind in (("--heartbeat-interval", "abc", "float"), ("--max-restarts", "x", "int")):
        with pytest.raises(SystemExit) as exit_info:
            supernode.main([flag, value, "--insecure"])
        assert exit_info.value.code == 2
        assert capsys.readouterr().err.strip().splitlines() == [
            f"fedhello supernode: argument {flag}: invalid {kind} value: '{value}'"
        ], "one line, no usage block"


def test_a_withdrawn_task_does_not_end_the_executor(monkeypatch, caplog):
    """A task the SuperNode finished itself (its token refused: HTTP 401) raises in the executor instead of Flower's
    SIGINT to the whole process; the executor logs it and serves the next task. Against a real HTTP server that
    refuses every request, through Flower's own runtime client."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx
    import pytest
    from flwr.proto.runtime_pb2 import AcquireTaskResponse, PullTaskInputRequest
    from flwr.proto.task_pb2 import Task
    from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor
    from flwr.supercore.retry import http_retry

    from fedhello.engines.flower import executor

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    kills: list[int] = []
    monkeypatch.setattr(http_retry.os, "kill", lambda pid, sig: kills.append(sig))  # Flower's answer, recorded
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        node = executor.NodeExecutor(f"127.0.0.1:{server.server_address[1]}")
        client = node.client(RuntimeTokenHttpInterceptor("a-revoked-token"))
        with pytest.raises(httpx.HTTPStatusError) as refused:
            client.PullTaskInput(PullTaskInputRequest())
        assert executor.withdrawn(refused.value) and kills == [], "raised, no SIGINT"
        assert executor.task_heartbeat(client)() is True, "the heartbeat keeps quiet"
        client.close()
    finally:
        server.shutdown()

    tasks = iter(
        [AcquireTaskResponse(task=Task(task_id=7), token="t7"), AcquireTaskResponse(task=Task(task_id=8), token="t8")]
    )

    class Acquirer:
        def AcquireTask(self, request: object) -> AcquireTaskResponse:  # noqa: N802 - Flower's name
            response = next(tasks, None)
            if response is None:
                raise httpx.ConnectError("the node is gone")
            return response

        def close(self) -> None:
            pass

    ran: list[str] = []

    def run_task(token: str) -> None:
        if token == "t7":
            raise refused.value
        ran.append(token)

    monkeypatch.setattr(node, "client", lambda *args, **kwargs: Acquirer())
    monkeypatch.setattr(node, "run_task", run_task)
    with caplog.at_level("WARNING", logger="fedhello.executor"), pytest.raises(executor.NodeGone) as gone:
        node.serve_forever(poll_s=0)
    assert ran == ["t8"] and gone.value.answered, "it served the next task, and left only when the node was gone"
    assert "task 7 was withdrawn by its SuperNode (HTTP 401)" in caplog.text


def test_the_launcher_loads_no_torch():
    """The launcher process only supervises its node: importing it (and so `fedhello.engines`) must not load torch,
    transformers or peft (about 470 MiB and 4-6 s per node before `ENGINES` loaded its engines lazily)."""
    import subprocess
    import sys

    heavy = ["torch", "transformers", "peft", "flwr"]
    code = f"import sys, fedhello.engines.flower.supernode; print(*(m for m in {heavy} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == [], f"the launcher imports {loaded}"


def test_a_dropped_node_signals_itself_once(monkeypatch, capsys):
    """Flower's node heartbeat and its request retries both answer an HTTP 401 with a SIGINT to the node; a second
    one interrupted Flower's exit handler (seen in a restart test: the node died with a traceback, status -2, and its
    launcher did not start it again). The node sends the first only, and says so once."""
    import os
    import signal

    from fedhello.engines.flower import supernode

    sent: list[int] = []
    monkeypatch.setattr(supernode._SelfSignal, "dropped", False)
    monkeypatch.setattr(supernode.os, "kill", lambda pid, sig: sent.append(sig))
    flower_os = supernode._SelfSignal()
    for _ in range(2):  # the heartbeat thread, then a request's retry
        flower_os.kill(os.getpid(), signal.SIGINT)
    assert sent == [signal.SIGINT] and supernode._SelfSignal.dropped
    assert capsys.readouterr().err.count("the SuperLink refused this node (HTTP 401") == 1
    flower_os.kill(4242, signal.SIGTERM)  # any other signal passes
    assert sent == [signal.SIGINT, signal.SIGTERM]
