"""A long-lived ClientApp executor for a SuperNode started with `--isolation process`.

By default (`--isolation subprocess`) a Flower 1.42 SuperNode starts `flower-superexec`, which starts a new
`flwr-clientapp` process for every message: every client round pays a Python start, the torch and
transformers imports, and a model and data load. With `--isolation process` the SuperNode leaves launching
to a separate process. This module is one that serves every task in ONE interpreter: it acquires a task token
from the SuperNode's runtime API, pulls the message, runs fedhello's ClientApp -- whose worker cache keeps the
model and the node's tokenised data from round to round -- and pushes the reply and the task's status, as
`flwr-clientapp` does (flwr/supernode/runtime/run_clientapp.py), without exiting after the task.

It serves only fedhello's app (a run of another app is answered with an error reply). fedhello's SuperNode
launcher (`python -m fedhello.engines.flower.supernode --isolation process ...`, `supernode.py`) starts it
beside the node itself, as its child; by hand, beside Flower's own `flower-supernode`:

    flower-supernode --isolation process --port 9094 --superlink LINK:9092 --node-config "..." &
    python -m fedhello.engines.flower.executor --runtime-api-address 127.0.0.1:9094 --insecure --parent-pid $!

The runtime API is the node's own loopback port, so `--insecure` is local only (the SuperLink connection
is the SuperNode's, and has its own TLS).

The executor exits with its node: at once when `--parent-pid` (the SuperNode) exits or is killed, and otherwise
once the node's runtime API has not answered for `NODE_GONE_S` seconds -- never serving another SuperNode that
later takes the same port.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=no-name-in-module
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from fedhello.engines.flower.app import PUBLISHER, shorten_object_pull_retry
from fedhello.engines.flower.clientapp import app as client_app
from fedhello.engines.flower.processes import is_running

LOGGER = logging.getLogger("fedhello.executor")
POLL_S = 0.02  # how often an idle executor asks for a task (flower-superexec waits 1 s by default)
# Flower's runtime client retries a refused connection for minutes; a node's own loopback API that does not answer
# for this long is gone (its SuperNode exited). Before the first answer the node may still be starting.
NODE_GONE_S = 10.0
STARTUP_S = 180.0
WATCH_S = 0.2  # how often the executor checks that its SuperNode (--parent-pid) still runs


def watch_node(pid: int, interval: float = WATCH_S) -> threading.Thread:
    """Exit this process as soon as the SuperNode `pid` is gone: exited, killed, a zombie, or (when it is this
    process's parent) no longer the parent. Immediately, without finishing a task: its reply has nowhere to go,
    and a task's retries would wait minutes for a node that will not come back."""
    was_parent = os.getppid() == pid

    def watch() -> None:
        while is_running(pid) and not (was_parent and os.getppid() != pid):
            time.sleep(interval)
        LOGGER.warning("its SuperNode (pid %d) is gone; the executor exits with it", pid)
        logging.shutdown()
        os._exit(0)

    thread = threading.Thread(target=watch, name="watch-node", daemon=True)
    thread.start()
    return thread


def withdrawn(err: BaseException) -> bool:
    """The runtime API refused a task's token (HTTP 401): the SuperNode finished the task itself, e.g. because the
    message's run ended. Flower's HTTP retry answers that with a SIGINT to the whole process, which suits
    `flwr-clientapp` (one process per task) but would end this executor, which serves every task of its node."""
    return isinstance(err, httpx.HTTPStatusError) and err.response.status_code == httpx.codes.UNAUTHORIZED


def task_heartbeat(client: RuntimeHttpClient) -> Callable[[], bool]:
    """Flower's task heartbeat, which keeps quiet once the task is withdrawn (its thread would die with a traceback);
    the task's own next request finds out."""
    beat = make_task_heartbeat_fn_http(client)

    def heartbeat() -> bool:
        try:
            return beat()
        except httpx.HTTPStatusError as err:
            if withdrawn(err):
                return True
            raise

    return heartbeat


class NodeGone(Exception):
    """The SuperNode's runtime API stopped answering (`answered`), or never did."""

    def __init__(self, message: str, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


class NodeExecutor:
    """Serves the ClientApp tasks of one SuperNode, one after another, in this process."""

    def __init__(self, runtime_api_address: str, root_certificates: bytes | None = None) -> None:
        self.address = runtime_api_address
        self.certificates = root_certificates

    def client(self, *interceptors: object, patience: float = NODE_GONE_S) -> RuntimeHttpClient:
        """A runtime-API client that gives up after `patience` seconds of failed tries (Flower's: minutes), and
        raises on HTTP 401 where Flower's retry would SIGINT this process (`withdrawn`)."""
        retry = make_simple_http_retry_invoker()
        retry.max_time = patience
        flower_rule = retry.should_giveup
        retry.should_giveup = lambda err: withdrawn(err) or bool(flower_rule and flower_rule(err))
        return RuntimeHttpClient.from_server_address(
            server_address=self.address,
            insecure=self.certificates is None,
            root_certificates=self.certificates,
            interceptors=list(interceptors),
            retry_invoker=retry,
        )

    def serve_forever(self, poll_s: float = POLL_S) -> None:
        """Acquire and run tasks until the process is stopped; `NodeGone` once the node's runtime API stops
        answering (after `STARTUP_S` while it has never answered)."""
        acquirer = self.client(RuntimeVersionHttpInterceptor(component_name="SuperExec"), patience=STARTUP_S)
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        answered = False
        try:
            while True:
                try:
                    response = acquirer.AcquireTask(request)
                except Exception as err:  # noqa: BLE001 - whatever the transport says, the node is unusable
                    state = "stopped answering" if answered else "never answered"
                    where = f"the SuperNode's runtime API at {self.address}"
                    raise NodeGone(f"{where} {state} ({type(err).__name__})", answered) from err
                if not answered:  # from now on, a node that does not answer is gone
                    answered = True
                    acquirer.close()
                    acquirer = self.client(RuntimeVersionHttpInterceptor(component_name="SuperExec"))
                if response.HasField("task") and response.token:
                    try:
                        self.run_task(response.token)
                    except Exception as err:  # noqa: BLE001 - a ClientApp's own failure is answered in run_task
                        if withdrawn(err):  # the node finished the task itself; it still serves the next one
                            LOGGER.warning(
                                "task %d was withdrawn by its SuperNode (HTTP 401); next", response.task.task_id
                            )
                            continue
                        where = f"the SuperNode's runtime API at {self.address}"
                        raise NodeGone(f"{where} stopped answering during a task ({type(err).__name__})", True) from err
                else:
                    time.sleep(poll_s)
        finally:
            acquirer.close()

    def run_task(self, token: str) -> None:
        """Pull one message, run the ClientApp on it and push its reply (or an error reply) and status."""
        client = self.client(
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), RuntimeTokenHttpInterceptor(token)
        )
        heartbeat = HeartbeatSender(task_heartbeat(client))
        heartbeat.start()
        message = context = reply = None
        status, details = SubStatus.FAILED, "ClientApp task failed"
        try:
            started = time.perf_counter()
            message, context, run, _ = pull_task_input(client)
            if not run.fab_id.startswith(f"{PUBLISHER}/"):
                raise RuntimeError(f"this SuperNode's executor serves only {PUBLISHER}'s app, not '{run.fab_id}'")
            pulled = time.perf_counter()
            reply = client_app(message=message, context=context)
            status, details = SubStatus.COMPLETED, ""
            LOGGER.info(
                "%s message: pulled in %.3f s, ran in %.3f s",
                message.metadata.message_type,
                pulled - started,
                time.perf_counter() - pulled,
            )
        except Exception as err:  # noqa: BLE001 - a failing task is answered, the executor goes on
            # Flower's own format, so the ServerApp reads the same reason as from flwr-clientapp
            details = f"{type(err)}:<'{err}'>"
            LOGGER.warning("ClientApp task failed: %s", details)
            if message is not None:
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    push_message(client, reply, context)
                push_task_output(client, context, status, details)
            finally:
                heartbeat.stop()
                client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's --host:--port")
    secure = parser.add_mutually_exclusive_group(required=True)
    secure.add_argument("--insecure", action="store_true", help="plain HTTP to the node's own runtime API")
    secure.add_argument("--root-certificates", type=Path, help="CA of the runtime API's certificate")
    parser.add_argument("--parent-pid", type=int, help="exit when this process (the SuperNode) exits")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per runtime-API request otherwise
    if args.parent_pid:
        watch_node(args.parent_pid)
    shorten_object_pull_retry()
    with_node = f", exits with pid {args.parent_pid}" if args.parent_pid else ""
    LOGGER.info("serving the SuperNode at %s%s", args.runtime_api_address, with_node)
    certificates = args.root_certificates.read_bytes() if args.root_certificates else None
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C, or SIGINT from Flower's own retry logic
        try:
            NodeExecutor(args.runtime_api_address, certificates).serve_forever()
        except NodeGone as gone:  # one line, no traceback: the node is gone, so is its executor
            LOGGER.warning("%s; the executor exits", gone)
            sys.exit(0 if gone.answered else 1)


if __name__ == "__main__":
    main()
