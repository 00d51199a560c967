"""`flower-supernode` with a short idle poll: `python -m fedhello.engines.flower.supernode [flower-supernode args]`.

Flower 1.42's SuperNode loop (`flwr/supernode/start_client_internal.py`) sleeps a fixed 3 s whenever the
SuperLink has no message for it, and 0.5 s between looks for a finished reply; neither is configurable. A
round therefore waits up to 3 s before a node even sees its message and up to 0.5 s more before the reply
leaves, whatever the training costs. This entry point runs Flower's own `flower-supernode` with those sleeps
capped at `FEDHELLO_SUPERNODE_POLL_S` seconds (default 0.1): the same process, flags and protocol, only
more frequent polls of the SuperLink (one small HTTP request per node every 0.1 s while idle). Its object
pulls retry sooner too (`app.OBJECT_PULL_RETRY`).
"""

from __future__ import annotations

import os
import time
from typing import Any

POLL_ENV = "FEDHELLO_SUPERNODE_POLL_S"


class _CappedSleep:
    """The `time` module with `sleep` capped at `cap` seconds."""

    def __init__(self, cap: float) -> None:
        self.cap = cap

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self.cap))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def main() -> None:
    from flwr.supernode import start_client_internal
    from flwr.supernode.cli import flower_supernode

    from fedhello.engines.flower.app import shorten_object_pull_retry

    start_client_internal.time = _CappedSleep(float(os.environ.get(POLL_ENV, "0.1")))  # type: ignore[assignment]
    shorten_object_pull_retry()
    flower_supernode()


if __name__ == "__main__":
    main()
