"""fedhello's SuperNode launcher: `python -m fedhello.engines.flower.supernode [flower-supernode args]`.

It runs Flower's own `flower-supernode` (same flags and protocol) with these changes:

- **Short polls.** Flower 1.42's SuperNode loop (`flwr/supernode/start_client_internal.py`) sleeps a fixed 3 s
  whenever the SuperLink has no message for it, and 0.5 s between looks for a finished reply; neither is
  configurable. A round therefore waits up to 3 s before a node even sees its message and up to 0.5 s more before
  the reply leaves, whatever the training costs. Here those sleeps are capped at `FEDHELLO_SUPERNODE_POLL_S`
  seconds (default 0.1): more frequent polls of the SuperLink (one small HTTP request per node every 0.1 s while
  idle). Its object pulls retry sooner too (`app.OBJECT_PULL_RETRY`).
- **Its executor comes with it.** With `--isolation process` a Flower SuperNode runs no ClientApp itself: some
  other process must take its tasks from its runtime API (`--host`/`--port`, default 127.0.0.1:9094). The
  launcher starts fedhello's executor (`executor.py`) for that as its own child, once the runtime API listens, with
  `--parent-pid` set to the node: one command per node, and the executor exits with its node, always.
  `--no-executor` leaves it out (to run another executor, e.g. Flower's `flower-superexec`).
- **It comes back.** The Flower SuperNode runs as the launcher's child process. When it ends on its own -- a
  restarted SuperLink that does not know the node (its state was in memory, or it counted the node lost) answers it
  with HTTP 401, and Flower then stops the node with a SIGINT to itself ("SuperNode terminated gracefully.", no
  reason) -- the launcher says why in one line and starts it again with the same arguments (node key,
  `--node-config`, runtime API port), and its executor with it, after 1, 2, 4, ... up to 30 s. `--max-restarts N`
  (default 20) bounds the restarts in a row (a node that ran `STEADY_S` seconds starts the count again); 0 never
  restarts. Only a node that ended with status 0 or `DROPPED` after its runtime API listened is restarted: one that
  never came up (bad arguments, certificates) or ended with Flower's error status 1 (e.g. the SuperLink refused its
  key) exits as before. SIGTERM/SIGINT to the launcher stop the node (the same signal, so Flower deactivates it) and
  its executor at once, and the launcher exits with the node's status. Flower's SuperNode cannot run twice in one
  process: its exit starts a timer that `os._exit`s the process 5 s later (`flwr.supercore.exit.flwr_exit`).
- **A message of an ended run is released.** Flower 1.42 leaves a message it stopped receiving because its run
  ended meanwhile (a SuperLink restarted mid-pull) pending in the node, where it blocks the next run's messages;
  the node deletes it (`release_ignored_messages`).
- **`--heartbeat-interval S`** (10-1800, Flower's default 30): how often the node tells the SuperLink it is alive;
  the SuperLink counts a silent node lost after two intervals.

Every SuperNode on one host needs its own `--port` (its runtime API; Flower's default 9094 serves only one).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

POLL_ENV = "FEDHELLO_SUPERNODE_POLL_S"
HEARTBEAT_ENV = "FEDHELLO_SUPERNODE_HEARTBEAT_S"  # the launcher's --heartbeat-interval, for its node process
NO_EXECUTOR = "--no-executor"
EXECUTOR_WAIT_S = 180.0  # how long the launcher waits for its node's runtime API before giving up on the executor
NODE_PROCESS = "--fedhello-node-process"  # internal: this process is the Flower SuperNode the launcher supervises
MAX_RESTARTS = 20  # default --max-restarts: restarts in a row
BACKOFF_S = (1.0, 30.0)  # the first and the longest wait before a restart (doubling)
STEADY_S = 300.0  # a node that ran this long starts the restart count again
DROPPED = 75  # the node's exit status when the SuperLink refused it, HTTP 401 (EX_TEMPFAIL)
STOP_GRACE_S = 10.0  # how long a signalled node gets to deactivate itself before it is killed


class _CappedSleep:
    """The `time` module with `sleep` capped at `cap` seconds."""

    def __init__(self, cap: float) -> None:
        self.cap = cap

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def executor_command(argv: list[str], node_pid: int) -> list[str] | None:
    """The command of the executor a SuperNode started with `argv` (flower-supernode's arguments) needs, or None:
    Flower's default `--isolation subprocess` launches its ClientApps itself, and `--no-executor` opts out."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--isolation", default="subprocess")
    parser.add_argument("--ssl-ca-certfile")  # the runtime API's own TLS, if the node serves it over HTTPS
    parser.add_argument(NO_EXECUTOR, action="store_true")
    args, _ = parser.parse_known_args(argv)
    if args.isolation != "process" or args.no_executor:
        return None
    address = runtime_api_address(argv)
    tls = ["--root-certificates", args.ssl_ca_certfile] if args.ssl_ca_certfile else ["--insecure"]
    command = [sys.executable, "-m", "fedhello.engines.flower.executor", "--runtime-api-address", address, *tls]
    return [*command, "--parent-pid", str(node_pid)]


def runtime_api_address(argv: list[str]) -> str:
    """The loopback address of the runtime API a SuperNode started with `argv` serves (a node that listens on
    every address is reached on loopback)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9094)  # Flower 1.42's default runtime API port
    args, _ = parser.parse_known_args(argv)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(args.host, args.host)
    return f"[{host}]:{args.port}" if ":" in host else f"{host}:{args.port}"


def _listens(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def _say(line: str) -> None:
    print(f"fedhello supernode: {line}", file=sys.stderr, flush=True)


def _refuse(message: str) -> NoReturn:
    """A bad launcher flag: one line, exit 2."""
    _say(message)
    sys.exit(2)


def _signal(proc: subprocess.Popen | None, sig: int) -> None:
    if proc is not None:  # send_signal skips a process already reaped
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


@dataclass
class _Supervisor:
    """The launcher: runs the Flower SuperNode (`argv`) as a child process, with its executor, and restarts it
    when it ends on its own."""

    argv: list[str]
    executor: bool = True
    max_restarts: int = MAX_RESTARTS
    wait_s: float = EXECUTOR_WAIT_S
    stopping: threading.Event = field(default_factory=threading.Event)
    node: subprocess.Popen | None = None
    executor_proc: subprocess.Popen | None = None

    def on_signal(self, signum: int, _frame: object) -> None:
        """SIGTERM/SIGINT: stop the node (the same signal: Flower deactivates it) and its executor, now; a second
        signal kills them."""
        again = self.stopping.is_set()
        self.stopping.set()
        _signal(self.node, signal.SIGKILL if again else signum)
        _signal(self.executor_proc, signal.SIGKILL if again else signal.SIGTERM)

    def start_node(self) -> subprocess.Popen:
        command = [sys.executable, "-m", "fedhello.engines.flower.supernode", NODE_PROCESS, *self.argv]
        # a group of its own: a terminal's Ctrl-C reaches the launcher, which passes it on once
        self.node = subprocess.Popen(command, process_group=0)  # noqa: S603 - this interpreter, fixed module
        return self.node

    def follow(self, node: subprocess.Popen, came_up: threading.Event) -> threading.Thread:
        """Wait until `node`'s runtime API listens (it starts that after its imports), then start its executor."""
        address = runtime_api_address(self.argv)
        command = executor_command(self.argv, node.pid) if self.executor else None

        def run() -> None:
            deadline = time.monotonic() + self.wait_s
            while not _listens(address):
                if node.poll() is not None or self.stopping.is_set():
                    return
                if time.monotonic() > deadline:
                    if command:
                        _say(f"nothing listens on {address} after {self.wait_s:.0f}s: no executor")
                    return
                time.sleep(0.2)
            came_up.set()
            if command and node.poll() is None and not self.stopping.is_set():
                # its own group too; it exits with its node (--parent-pid), and is stopped with the launcher
                self.executor_proc = subprocess.Popen(command, process_group=0)  # noqa: S603 - our own command
                if self.stopping.is_set():  # a signal came while it started
                    _signal(self.executor_proc, signal.SIGTERM)

        thread = threading.Thread(target=run, name="follow-node", daemon=True)
        thread.start()
        return thread

    def end_executor(self) -> None:
        """The executor exits with its node by itself (`--parent-pid`); whatever is left is stopped, and reaped."""
        proc, self.executor_proc = self.executor_proc, None
        if proc is None:
            return
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self.on_signal)
        restarts = 0
        while True:
            came_up = threading.Event()
            started = time.monotonic()
            node = self.start_node()
            if self.stopping.is_set():  # a signal came while it started
                _signal(node, signal.SIGTERM)
            follower = self.follow(node, came_up)
            code = self.wait(node)
            follower.join(timeout=5)
            self.end_executor()
            if self.stopping.is_set():
                return code
            if not came_up.is_set() or code not in (0, DROPPED):
                return code  # it never started (bad arguments, certificates) or Flower's error exit: it said why
            if time.monotonic() - started >= STEADY_S:
                restarts = 0
            why = (
                "the SuperLink dropped this node (it no longer knows it: restarted?)"
                if code == DROPPED
                else f"the Flower SuperNode exited on its own (status {code})"
            )
            if restarts >= self.max_restarts:
                limit = "restarts are off (--max-restarts 0)" if self.max_restarts == 0 else "no restart left"
                _say(f"{why}; {limit} (--max-restarts {self.max_restarts}): the launcher exits")
                return code
            delay = min(BACKOFF_S[0] * 2**restarts, BACKOFF_S[1])
            restarts += 1
            _say(f"{why}; starting it again in {delay:.0f} s (restart {restarts} of {self.max_restarts})")
            if self.stopping.wait(delay):
                return code

    def wait(self, node: subprocess.Popen) -> int:
        """The node's exit status; once the launcher was signalled, a node that does not stop within
        `STOP_GRACE_S` is killed."""
        while True:
            try:
                return node.wait(timeout=STOP_GRACE_S if self.stopping.is_set() else 1.0)
            except subprocess.TimeoutExpired:
                if self.stopping.is_set() and node.poll() is None:
                    node.kill()


class _SelfSignal:
    """The `os` module as Flower's SuperNode connection and HTTP retries see it: a SIGINT the node sends itself
    (Flower's answer to an HTTP 401 from the SuperLink) is noted, so the node exits with `DROPPED`."""

    dropped = False

    def kill(self, pid: int, sig: int) -> None:
        if pid == os.getpid() and sig == signal.SIGINT:
            if _SelfSignal.dropped:  # already stopping: a second SIGINT (heartbeat and a request retry can both
                return  # send one) would interrupt Flower's exit handler, and the node would die with a traceback
            _SelfSignal.dropped = True
            _say("the SuperLink refused this node (HTTP 401: it does not know the node now); it stops")
        os.kill(pid, sig)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def watch_launcher(interval: float = 0.5) -> threading.Thread:
    """Stop this node (SIGTERM: Flower deactivates it) when the launcher that started it is gone, e.g. killed."""
    launcher = os.getppid()

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="watch-launcher", daemon=True)
    thread.start()
    return thread


class _NotingState:
    """A SuperNode's `NodeState` as `_pull_and_store_message` sees it: the tasks it creates and the messages it
    stores are noted."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.tasks: list[int] = []
        self.messages: list[str] = []

    def create_task(self, *args: Any, **kwargs: Any) -> int | None:
        task_id = self.state.create_task(*args, **kwargs)
        if task_id is not None:
            self.tasks.append(task_id)
        return task_id

    def store_message(self, message: Any) -> str | None:
        message_id = self.state.store_message(message)
        if message_id:
            self.messages.append(message_id)
        return message_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.state, name)


def release_ignored_messages() -> None:
    """Make Flower's SuperNode forget a message it stopped receiving because its run ended meanwhile.

    Flower 1.42's `_pull_and_store_message` creates the message's task and stores the message before it pulls the
    message's objects from the SuperLink. When the run is no longer RUNNING by then -- its SuperLink was restarted
    while the node was pulling -- `RunNotRunningException` (a `BaseException`) passes the cleanup Flower does for
    a failed pull: it logs "Ignoring message" but leaves the task pending and the message without its objects. The
    node's executor then takes that task and waits for the objects (an hour and more), and the next run's messages
    wait behind it: the resumed run's first query is never answered. Here such a message is deleted with its
    objects after the call, and its task, when no executor claimed it yet, finished as failed; an executor that
    claimed it finds the message gone and fails the task itself, without a reply (one reply per message pulled is
    what the node's loop waits for)."""
    from flwr.common.constant import Status, SubStatus
    from flwr.supernode import start_client_internal

    pull_and_store = start_client_internal._pull_and_store_message
    if getattr(pull_and_store, "releases_ignored", False):
        return

    def pull_and_store_releasing(*, state: Any, object_store: Any, **kwargs: Any) -> int | None:
        noted = _NotingState(state)
        run_id = pull_and_store(state=noted, object_store=object_store, **kwargs)
        if run_id is not None or not (noted.messages or noted.tasks):
            return run_id  # a message it kept, or none pulled (every idle poll): nothing to look up
        # a message it did not keep: nothing of it may stay behind
        for message_id in noted.messages:
            state.delete_messages(message_ids=[message_id])
            object_store.delete(message_id)
        for task in state.get_tasks(task_ids=noted.tasks) if noted.tasks else ():
            if task.status.status == Status.FINISHED:  # Flower's own cleanup of a failed pull did it
                continue
            # claiming is atomic: a task an executor holds is left to it (its message is gone, it fails)
            if state.claim_task(task.task_id) is not None:
                state.finish_task(task.task_id, SubStatus.FAILED, "its run ended while its message was received")
            _say(f"released task {task.task_id}: its run ended while its message was received")
        return None

    pull_and_store_releasing.releases_ignored = True  # type: ignore[attr-defined]
    start_client_internal._pull_and_store_message = pull_and_store_releasing


def run_node(argv: list[str]) -> None:
    """The supervised process: Flower's `flower-supernode` with `argv`, its sleeps capped, a dropped node noted
    (`DROPPED`) and messages of ended runs released (`release_ignored_messages`)."""
    from flwr.supercore import heartbeat as heartbeat_module
    from flwr.supercore.retry import http_retry
    from flwr.supernode import fleet_http_connection, start_client_internal
    from flwr.supernode.cli import flower_supernode

    from fedhello.engines.flower.app import shorten_object_pull_retry

    sys.argv = [sys.argv[0], *argv]
    start_client_internal.time = _CappedSleep(float(os.environ.get(POLL_ENV, "0.1")))  # type: ignore[assignment]
    # Flower answers an HTTP 401 from the SuperLink (it does not know this node) with a SIGINT to the node itself,
    # in the heartbeat and in its request retries
    fleet_http_connection.os = http_retry.os = _SelfSignal()  # type: ignore[assignment]
    release_ignored_messages()
    if heartbeat := os.environ.get(HEARTBEAT_ENV):
        # the interval the node announces and keeps; the SuperLink counts it lost after two without a heartbeat
        for module in (fleet_http_connection, heartbeat_module):
            module.HEARTBEAT_DEFAULT_INTERVAL = float(heartbeat)  # type: ignore[attr-defined]
    shorten_object_pull_retry()
    watch_launcher()
    try:
        flower_supernode()
    except (SystemExit, KeyboardInterrupt):  # Flower's exit, or a SIGINT that still caught it mid-exit
        if _SelfSignal.dropped:
            sys.exit(DROPPED)
        raise
    sys.exit(DROPPED if _SelfSignal.dropped else 0)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [NODE_PROCESS]:
        run_node(argv[1:])
        return
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.error = _refuse  # type: ignore[method-assign]  # one line, not argparse's usage block
    parser.add_argument(NO_EXECUTOR, action="store_true")
    parser.add_argument("--max-restarts", type=int, default=MAX_RESTARTS)
    parser.add_argument("--heartbeat-interval", type=float, default=None)
    ours, flower_args = parser.parse_known_args(argv)
    if ours.heartbeat_interval is not None:
        from flwr.common.constant import HEARTBEAT_MAX_INTERVAL, HEARTBEAT_MIN_INTERVAL

        if not HEARTBEAT_MIN_INTERVAL <= ours.heartbeat_interval <= HEARTBEAT_MAX_INTERVAL:
            accepted = f"{HEARTBEAT_MIN_INTERVAL}-{HEARTBEAT_MAX_INTERVAL}"
            _refuse(f"--heartbeat-interval {ours.heartbeat_interval:g}: Flower's SuperLink accepts {accepted} seconds")
        os.environ[HEARTBEAT_ENV] = str(ours.heartbeat_interval)
    supervisor = _Supervisor(flower_args, executor=not ours.no_executor, max_restarts=max(ours.max_restarts, 0))
    sys.exit(supervisor.run())


if __name__ == "__main__":
    main()
