"""A long-lived ClientApp executor for a SuperNode started with `--isolation process`.

By default (`--isolation subprocess`) a Flower 1.42 SuperNode starts `flower-superexec`, which starts a new
`flwr-clientapp` process for every message: every client round pays a Python start, the torch and
transformers imports, and a model and data load. With `--isolation process` the SuperNode leaves launching
to a separate process. This module is one that serves every task in ONE interpreter: it acquires a task token
from the SuperNode's runtime API, pulls the message, runs fedhello's ClientApp -- whose worker cache keeps the
model and the node's tokenised data from round to round -- and pushes the reply and the task's status, as
`flwr-clientapp` does (flwr/supernode/runtime/run_clientapp.py), without exiting after the task.

It serves only fedhello's app (a run of another app is answered with an error reply). On one machine:

    flower-supernode --isolation process --port 9094 --superlink LINK:9092 --node-config "..." &
    python -m fedhello.engines.flower.executor --runtime-api-address 127.0.0.1:9094 --insecure

The runtime API is the node's own loopback port, so `--insecure` is local only (the SuperLink connection
is the SuperNode's, and has its own TLS).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from pathlib import Path

from flwr.app import Message
from flwr.app.error import Error
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=no-name-in-module
from flwr.supercore.app_utils import start_parent_process_monitor
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import make_simple_http_retry_invoker
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

from fedhello.engines.flower.app import PUBLISHER, shorten_object_pull_retry
from fedhello.engines.flower.clientapp import app as client_app

LOGGER = logging.getLogger("fedhello.executor")
POLL_S = 0.02  # how often an idle executor asks for a task (flower-superexec waits 1 s by default)


class NodeExecutor:
    """Serves the ClientApp tasks of one SuperNode, one after another, in this process."""

    def __init__(self, runtime_api_address: str, root_certificates: bytes | None = None) -> None:
        self.address = runtime_api_address
        self.certificates = root_certificates

    def client(self, *interceptors: object) -> RuntimeHttpClient:
        return RuntimeHttpClient.from_server_address(
            server_address=self.address,
            insecure=self.certificates is None,
            root_certificates=self.certificates,
            interceptors=list(interceptors),
            retry_invoker=make_simple_http_retry_invoker(),
        )

    def serve_forever(self, poll_s: float = POLL_S) -> None:
        """Acquire and run tasks until the process is stopped."""
        acquirer = self.client(RuntimeVersionHttpInterceptor(component_name="SuperExec"))
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        try:
            while True:
                response = acquirer.AcquireTask(request)
                if response.HasField("task") and response.token:
                    self.run_task(response.token)
                else:
                    time.sleep(poll_s)
        finally:
            acquirer.close()

    def run_task(self, token: str) -> None:
        """Pull one message, run the ClientApp on it and push its reply (or an error reply) and status."""
        client = self.client(
            RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"), RuntimeTokenHttpInterceptor(token)
        )
        heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
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
        start_parent_process_monitor(args.parent_pid)
    shorten_object_pull_retry()
    certificates = args.root_certificates.read_bytes() if args.root_certificates else None
    with contextlib.suppress(KeyboardInterrupt):  # SIGINT from the parent monitor, or Ctrl-C
        NodeExecutor(args.runtime_api_address, certificates).serve_forever()


if __name__ == "__main__":
    main()
