"""fedhello's SuperNode launcher: `python -m fedhello.engines.flower.supernode [flower-supernode args]`.

It runs Flower's own `flower-supernode` (same process, flags and protocol) with two changes:

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

Every SuperNode on one host needs its own `--port` (its runtime API; Flower's default 9094 serves only one).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

POLL_ENV = "FEDHELLO_SUPERNODE_POLL_S"
NO_EXECUTOR = "--no-executor"
EXECUTOR_WAIT_S = 180.0  # how long the launcher waits for its node's runtime API before giving up on the executor


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
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9094)  # Flower 1.42's default runtime API port
    parser.add_argument("--ssl-ca-certfile")  # the runtime API's own TLS, if the node serves it over HTTPS
    parser.add_argument(NO_EXECUTOR, action="store_true")
    args, _ = parser.parse_known_args(argv)
    if args.isolation != "process" or args.no_executor:
        return None
    # a node that listens on every address is reached on loopback
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(args.host, args.host)
    address = f"[{host}]:{args.port}" if ":" in host else f"{host}:{args.port}"
    tls = ["--root-certificates", args.ssl_ca_certfile] if args.ssl_ca_certfile else ["--insecure"]
    command = [sys.executable, "-m", "fedhello.engines.flower.executor", "--runtime-api-address", address, *tls]
    return [*command, "--parent-pid", str(node_pid)]


def _listens(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=1).close()
        return True
    except OSError:
        return False


def start_executor(command: list[str], wait_s: float = EXECUTOR_WAIT_S) -> threading.Thread:
    """Start the executor once the runtime API it names listens (the node starts it after its imports), in this
    process's group, so that stopping the node's group stops it too. A thread: the node runs in the foreground."""
    address = command[command.index("--runtime-api-address") + 1]

    def launch() -> None:
        deadline = time.monotonic() + wait_s
        while not _listens(address):
            if time.monotonic() > deadline:
                print(f"fedhello: nothing listens on {address} after {wait_s:.0f}s: no executor", file=sys.stderr)
                return
            time.sleep(0.2)
        subprocess.Popen(command)  # noqa: S603 - this interpreter, fixed module, our own arguments

    thread = threading.Thread(target=launch, name="start-executor", daemon=True)
    thread.start()
    return thread


def main() -> None:
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    from fedhello.engines.flower.app import shorten_object_pull_retry

    command = executor_command(sys.argv[1:], os.getpid())
    sys.argv = [arg for arg in sys.argv if arg != NO_EXECUTOR]  # Flower's parser does not know it
    start_client_internal.time = _CappedSleep(float(os.environ.get(POLL_ENV, "0.1")))  # type: ignore[assignment]
    shorten_object_pull_retry()
    if command:
        start_executor(command)
    flower_supernode()


if __name__ == "__main__":
    main()
