"""The Flower ServerApp: fedhello's shared round loop with a dispatch that speaks Flower messages.

The ServerApp builds the server side of the federation (coordinator, test and proxy sets) and runs
`fedhello.server.loop.run_rounds` -- the very loop of the local engine -- so allocation, aggregation,
evaluation and the run folder are the same code. Only `FlowerDispatch` is Flower-specific: it maps
fedhello clients to SuperNodes, sends each sampled client's plan with the global adapter, and collects
the replies, logging every client it loses (no reply in time, node gone, error reply) to
`RUN_DIR/flower.log`.

The dispatch judges only transport: a reply must decode and be for the client it was asked of. Whether
an update is acceptable (keys, rank-truncated shapes, dtypes, values, sample count, norm) is decided by
the one validator the shared loop applies to every engine (server/validation.py), so a method's result
cannot depend on the engine.
"""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedhello.config import RunConfig, load_config
from fedhello.engines.base import RunOptions
from fedhello.engines.flower.app import RunRequest, shorten_object_pull_retry
from fedhello.engines.flower.messages import (
    LOCAL_DATA,
    NUM_PARTITIONS,
    PARTITION_ID,
    QUERY,
    TRAIN,
    TrainTask,
    config_json,
    read_update_content,
    state_to_record,
    train_content,
)
from fedhello.engines.flower.secure import SecureFlowerRounds
from fedhello.errors import FedHelloError
from fedhello.plan import ClientUpdate, Plan
from fedhello.rundir import FLOWER_LOG, new_run_dir, read_metrics
from fedhello.rundir.files import CLIENTS_DIR
from fedhello.runtime import quiet_libraries
from fedhello.seeding import client_seed
from fedhello.server.federation import Federation
from fedhello.server.loop import lost_every_round, partition_sizes
from fedhello.server.resume import client_store
from fedhello.server.startup import start_server

LOGGER = logging.getLogger("fedhello.flower")
STARTUP_TIMEOUT_S = 180.0  # how long the ServerApp waits for SuperNodes to cover every partition
NODE_CHECK_S = 2.0  # how often a waiting round asks the SuperLink which nodes are still connected
POLL_S = 0.05


class EngineLog:
    """Appends the engine's events (nodes found, clients lost) to RUN_DIR/flower.log and the logger."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, text: str, level: int = logging.INFO) -> None:
        LOGGER.log(level, text)
        with self.path.open("a") as f:
            f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {text}\n")


class FlowerDispatch:
    """`dispatch(round, plans, global_state)` over a Flower `Grid`.

    Client c is served by the live SuperNode whose node config has partition-id == c % num-partitions.
    A client whose node is gone, errs, or does not answer within `flower.round_timeout_s` is lost for
    the round; the round goes on with the others (the shared loop applies `reliability.min_clients`).
    A node that missed a deadline is not sent work again; a node that (re)connects is picked up.
    """

    def __init__(self, grid: Grid, config: RunConfig, log: EngineLog, state_dir: str | None = None) -> None:
        self.grid = grid
        self.state_dir = state_dir  # the clients' store, when they share this machine (flower-sim); else node-local
        self.config = config
        self.log = log
        self.config_json = config_json(config)
        self.partitions: dict[int, tuple[int, int]] = {}  # node id -> (partition-id, num-partitions)
        self.local_data: dict[int, bool] = {}  # node id -> whether it holds data of its own
        self.lost_nodes: set[int] = set()
        self.lost: dict[int, str] = {}  # client -> why it sent nothing, in the last round (`lost_reasons`)
        self.started = False

    # --- nodes -------------------------------------------------------------------------------------
    def live_nodes(self) -> set[int]:
        return set(self.grid.get_node_ids()) - self.lost_nodes

    def discover(self, timeout: float = 60.0, starting: bool = False) -> set[int]:
        """Ask every new node which partition it serves; return the live nodes with a known partition.
        While `starting`, a node that has not answered yet is asked again later (its ClientApp may still be
        importing torch on a busy machine); afterwards a silent node is lost."""
        live = self.live_nodes()
        unknown = sorted(live - self.partitions.keys())
        if unknown:
            messages = [
                Message(content=RecordDict({}), dst_node_id=node, message_type=QUERY, group_id="discover")
                for node in unknown
            ]
            silent = set(unknown)
            for reply in self.grid.send_and_receive(messages, timeout=timeout):
                node = reply.metadata.src_node_id
                silent.discard(node)
                if reply.has_error():
                    self.log.write(f"node {node} cannot serve: {reply.error.reason}", logging.WARNING)
                    self.lost_nodes.add(node)
                    continue
                info = reply.content.config_records["node"]
                self.partitions[node] = (int(info[PARTITION_ID]), int(info[NUM_PARTITIONS]))
                self.local_data[node] = bool(info.get(LOCAL_DATA, False))
                own = " with its own data" if self.local_data[node] else ""
                self.log.write(f"node {node} serves partition {info[PARTITION_ID]} of {info[NUM_PARTITIONS]}{own}")
            for node in silent:
                self.log.write(f"node {node} did not answer the partition query within {timeout:g}s", logging.WARNING)
                if not starting:
                    self.lost_nodes.add(node)
        return live & self.partitions.keys()

    def wait_for_partitions(self) -> None:
        """Block until live nodes cover every partition (SuperNodes may connect after the ServerApp starts)."""
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            live = self.discover(starting=True)
            counts = {self.partitions[n][1] for n in live}
            if len(counts) > 1:
                raise FedHelloError(f"SuperNodes disagree on num-partitions: {sorted(counts)}")
            if counts:
                (total,) = counts
                missing = set(range(total)) - {self.partitions[n][0] for n in live}
                if not missing:
                    self.check_node_data(live, total)  # once, when every partition is served
                    self.log.write(f"{len(live)} SuperNodes serve all {total} partitions")
                    return
            else:
                missing = {"all"}
            if time.monotonic() > deadline:
                raise FedHelloError(
                    f"after {STARTUP_TIMEOUT_S:.0f}s no SuperNode serves partitions {sorted(map(str, missing))}"
                    " (fix: start one flower-supernode per partition with --node-config)"
                )
            time.sleep(0.5)

    def check_node_data(self, live: set[int], total: int) -> None:
        """With `flower.node_data` every node holds its own data and serves one client: as many partitions as
        clients. Without it, a node's own data are not used (said once in the log)."""
        clients = self.config.federation.num_clients
        if self.config.flower.node_data:
            if total != clients:
                raise FedHelloError(
                    f"flower.node_data: SuperNodes report num-partitions={total}, the run has {clients} clients "
                    "(fix: one SuperNode per client, num-partitions = federation.num_clients)"
                )
            without = sorted(self.partitions[n][0] for n in live if not self.local_data.get(n))
            if without:
                raise FedHelloError(
                    f"flower.node_data: the SuperNodes of partitions {without} hold no data "
                    "(fix: start them with --node-config 'data-path=... partition-id=I num-partitions=K')"
                )
        elif any(self.local_data.get(n) for n in live):
            self.log.write(
                "some SuperNodes hold data of their own; this run uses the server's partitions "
                "(set flower.node_data to train on the nodes' data)",
                logging.WARNING,
            )

    def holder(self, client_id: int, live: set[int]) -> int | None:
        for node in sorted(live):
            partition, total = self.partitions[node]
            if client_id % total == partition:
                return node
        return None

    # --- one round ---------------------------------------------------------------------------------
    def lose(self, round_num: int, client_id: int, node: int | None, why: str) -> None:
        where = f" (node {node}, partition {self.partitions[node][0]})" if node in self.partitions else ""
        self.lost[client_id] = f"{why}{where}"
        self.log.write(f"round {round_num}: lost client {client_id}{where}: {why}", logging.WARNING)

    def lost_reasons(self) -> dict[int, str]:
        """Why each client of the last round sent nothing (`server.loop.ExplainsLosses`): metrics.jsonl records it."""
        return dict(self.lost)

    def __call__(self, round_num: int, plans: dict[int, Plan], state: dict[str, torch.Tensor]) -> list[ClientUpdate]:
        self.lost = {}
        live = self.ready()
        arrays = state_to_record(state)  # encoded once, shared by every message of the round
        targets: dict[int, tuple[int, Message]] = {}
        for cid, plan in plans.items():
            node = self.holder(cid, live)
            if node is None:
                self.lose(round_num, cid, None, "no live SuperNode serves its partition")
                continue
            seed = client_seed(self.config.seed, round_num, cid)
            task = TrainTask(cid, round_num, seed, plan, self.config_json, state, self.state_dir)
            message = Message(
                content=train_content(task, arrays), dst_node_id=node, message_type=TRAIN, group_id=str(round_num)
            )
            targets[cid] = (node, message)
        updates: dict[int, ClientUpdate] = {}
        for cid, reply in self.exchange_messages(round_num, targets).items():
            try:
                update = read_update_content(reply.content, plans[cid])
                check_update(update, cid)
            except (KeyError, ValueError, TypeError, FedHelloError) as err:
                self.lose(round_num, cid, targets[cid][0], f"malformed reply: {err}")
                continue
            updates[cid] = update
        return [updates[cid] for cid in plans if cid in updates]

    def ready(self) -> set[int]:
        """The live nodes with a known partition; the first call waits until every partition is served."""
        if not self.started:
            self.wait_for_partitions()
            self.started = True
        return self.discover()

    def exchange_messages(
        self, round_num: int, targets: dict[int, tuple[int, Message]], what: str = ""
    ) -> dict[int, Message]:
        """Push each client's message to its node and return the replies that are not errors, by client; a client
        whose node errs, disconnects or misses `flower.round_timeout_s` is lost (`lose`). `what` names the exchange
        in flower.log (a secure-aggregation stage)."""
        ids = list(self.grid.push_messages([message for _, message in targets.values()]))
        if len(ids) != len(targets):
            raise FedHelloError(f"round {round_num}: the SuperLink accepted {len(ids)} of {len(targets)} messages")
        sent = ", ".join(f"{cid}->node {node}" for cid, (node, _) in targets.items())
        self.log.write(f"round {round_num}: sent {len(ids)} clients {what}{sent}")
        pending = {mid: (cid, node) for mid, (cid, (node, _)) in zip(ids, targets.items(), strict=True)}
        return self.collect(round_num, pending)

    def collect(self, round_num: int, pending: dict[str, tuple[int, int]]) -> dict[int, Message]:
        """Wait for the replies of `pending` (message id -> (client, node)) until all came, the deadline passed or
        their nodes disconnected; return the good ones by client."""
        timeout = self.config.flower.round_timeout_s
        deadline = time.monotonic() + timeout if timeout else None
        next_check = time.monotonic() + NODE_CHECK_S
        replies: dict[int, Message] = {}
        while pending:
            for reply in self.grid.pull_messages(list(pending)):
                mid = reply.metadata.reply_to_message_id
                if mid not in pending:
                    continue
                cid, node = pending.pop(mid)
                if reply.has_error():
                    self.lose(round_num, cid, node, f"error reply: {error_text(reply.error.reason)}")
                    continue
                replies[cid] = reply
            if not pending:
                break
            now = time.monotonic()
            if deadline is not None and now > deadline:
                for cid, node in pending.values():
                    self.lose(round_num, cid, node, f"no reply within {timeout:g}s")
                    self.lost_nodes.add(node)
                break
            if now > next_check:
                connected = set(self.grid.get_node_ids())
                for mid, (cid, node) in list(pending.items()):
                    if node not in connected:
                        self.lose(round_num, cid, node, "its SuperNode disconnected")
                        self.lost_nodes.add(node)
                        del pending[mid]
                next_check = now + NODE_CHECK_S
            time.sleep(POLL_S)
        return replies


# how a ClientApp exception reaches the server: "<class 'fedhello.errors.FedHelloError'>:<'the message'>"
_FLOWER_ERROR = re.compile(r"^<class '(?:[\w.]+\.)?(\w+)'>:<'(.*)'>$", re.DOTALL)


def error_text(reason: str) -> str:
    """A node's error reply as one readable line ("FedHelloError: node data ...") instead of Flower's wrapping."""
    found = _FLOWER_ERROR.match(reason.strip())
    text = f"{found.group(1)}: {found.group(2)}" if found else reason.strip()
    return " ".join(text.split())


def check_lost_clients(run_dir: Path) -> None:
    """Fail, in one line, a finished run in which some client was lost in every round it was sampled: its node
    never trained (e.g. its data was refused), which the run's exit status must show. The run folder is complete."""
    lost = lost_every_round(read_metrics(run_dir))
    if lost:
        reasons = "; ".join(f"client {cid}: {why}" for cid, why in lost.items())
        raise FedHelloError(
            f"client(s) {sorted(lost)} lost in every round they were sampled ({reasons}); the results in {run_dir} "
            "are without them (fix: repair those nodes, see flower.log and metrics.jsonl failed_clients)"
        )


REPORT_TIMEOUT_S = 600.0


def write_report(run_dir: Path, log: EngineLog) -> None:
    """RUN_DIR/report/report.html for a run started with `flwr run`, as `fedhello run` writes it: by the
    `fedhello report` command in a child process (the report sits above the engines; a finished run is never
    failed by its report). Where it went, or why not, is written to flower.log and the ServerApp's log."""
    command = [sys.executable, "-m", "fedhello.cli", "report", str(run_dir)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=REPORT_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.write(f"report not written: {type(err).__name__} (retry: fedhello report {run_dir})", logging.WARNING)
        return
    if done.returncode == 0:
        log.write(f"report: {done.stdout.strip().splitlines()[-1] if done.stdout.strip() else run_dir / 'report'}")
    else:
        why = " ".join((done.stderr or done.stdout).strip().splitlines()[-1:]) or f"status {done.returncode}"
        log.write(f"report not written: {why} (retry: fedhello report {run_dir})", logging.WARNING)


def check_update(update: ClientUpdate, client_id: int) -> None:
    """Transport-level check: the reply must be for the client it was asked of. Everything about its
    content (keys, shapes -- rank-truncated LoRA factors are smaller than the global tensors -- dtypes,
    values, sample count) is the shared validator's job in the round loop, so it is judged alike in
    every engine and a refusal is logged in metrics.jsonl with its reason."""
    if update.client_id != client_id:
        raise FedHelloError(f"reply is for client {update.client_id}")


def serve(
    grid: Grid, config: RunConfig, run_dir: Path, options: RunOptions, holds_partitions: bool = False
) -> dict[str, Any]:
    """Run every round of `config` over `grid`; write the run folder like the local engine does.
    `holds_partitions`: the clients' data are this server's own partitions (simulation), so their sample
    counts are known, not claimed."""
    quiet_libraries()
    server = start_server(config, options.show_progress, options.observers)
    federation = server.federation
    # simulated clients live on this machine: their personal state goes under the run folder, as on `local`
    state_dir = str((run_dir / CLIENTS_DIR).resolve()) if holds_partitions else None
    if state_dir is not None:
        client_store(state_dir, run_dir, options.resume)
    dispatch = FlowerDispatch(grid, config_for_nodes(federation), EngineLog(run_dir / FLOWER_LOG), state_dir)
    rounds: FlowerDispatch | SecureFlowerRounds = dispatch
    if config.secure.enabled:  # four exchanges a round; the server sees only per-tensor sums
        rounds = SecureFlowerRounds(dispatch, server.uploads)
    counts = partition_sizes(federation) if holds_partitions else None
    try:
        return server.run(rounds, run_dir, options.resume, counts)
    except Exception as err:
        dispatch.log.write(f"run failed: {type(err).__name__}: {err}", logging.ERROR)
        raise


@contextlib.contextmanager
def said_when_stopped(run_dir: Path) -> Iterator[None]:
    """Write "run stopped" to flower.log if Flower stops this ServerApp while the block runs. Flower turns the loss
    of its SuperLink (its parent watch), `flwr stop` and signals into `flwr_exit`, whose own exit handlers push to
    the (gone) SuperLink and may end in `os._exit` before any exception reaches fedhello: so this hooks in first."""
    from flwr.supercore.exit import add_exit_handler

    running = True

    def on_exit() -> None:
        if running:
            EngineLog(run_dir / FLOWER_LOG).write(
                "run stopped: Flower stopped the ServerApp (its SuperLink exited, or flwr stop); rounds up to the "
                f"last checkpoint are kept (continue: flwr run with resume=true and run-dir={run_dir})",
                logging.ERROR,
            )

    add_exit_handler(on_exit, run_before_force_exit=True)
    try:
        yield
    finally:
        running = False


def config_for_nodes(federation: Federation) -> RunConfig:
    """The config the nodes build their workers from: the run's, with the class names fixed from the server's
    data when the nodes label their own data by them (`flower.node_data`)."""
    config = federation.config
    if not config.flower.node_data or config.data.label_names:
        return config
    fixed = config.model_copy(deep=True)
    fixed.data.label_names = list(federation.label_names)
    return fixed


def config_from_run_config(run_config: dict[str, Any]) -> tuple[RunConfig, Path, bool]:
    """The run config, its folder and whether to resume it, from Flower's run config (`app.RunRequest`)."""
    request = RunRequest.from_run_config(run_config)
    config = load_config(request.config or None, request.overrides)
    return config, new_run_dir(config, request.run_dir or None), request.resume


def build_server_app(
    runs: Sequence[tuple[RunConfig, Path]], options: RunOptions = RunOptions(show_progress=False)
) -> ServerApp:
    """A ServerApp bound to already resolved configs, served one after another over the same grid (the
    simulation engine runs it in-process; its clients hold the server's own partitions)."""
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        for config, run_dir in runs:
            serve(grid, config, run_dir, options, holds_partitions=True)

    return server


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for `flwr run` and `flower-superlink`: everything comes from the run config. The
    SuperNodes hold their own data, so their sample counts are claims the validator bounds."""
    shorten_object_pull_retry()  # replies are pulled from the SuperLink as they arrive
    config, run_dir, resume = config_from_run_config(dict(context.run_config))
    LOGGER.info("fedhello run folder: %s", run_dir)
    with said_when_stopped(run_dir):
        serve(grid, config, run_dir, RunOptions(show_progress=False, resume=resume))
    if RunRequest.from_run_config(dict(context.run_config)).report:
        write_report(run_dir, EngineLog(run_dir / FLOWER_LOG))
    try:
        check_lost_clients(run_dir)  # Flower then marks the run failed (`flwr ls`), and says why in its log
    except FedHelloError as err:
        EngineLog(run_dir / FLOWER_LOG).write(f"run failed: {err}", logging.ERROR)
        raise
