"""`--engine flower-deploy`: a real Flower deployment on loopback, started and stopped by fedhello.

`LocalDeployment` starts one `flower-superlink` and `flower.supernodes` `flower-supernode` processes on
127.0.0.1 (free ports, a private FLWR_HOME), each SuperNode with `--node-config "partition-id=i
num-partitions=K"` (plus keys of its own, e.g. the `data-path` of a node that holds its own data), each started
through fedhello's launcher (`supernode.py`), which with `isolation="process"` starts the node's long-lived
ClientApp executor (`executor.py`) as its child; the engine submits
the app (`app.write_app`) with `flwr run` and waits for it. Every process is started in its own session and
stopped with what it spawned (`processes.stop_all`) in a `finally` block, so nothing outlives a failed run.

Plain HTTP (`--insecure`) is the default on loopback. With `tls` the deployment generates a CA and a
SuperLink certificate in its workdir (`security.generate`) and every process (SuperLink, SuperNodes,
`flwr`) speaks HTTPS; with `node_auth` the SuperLink admits only SuperNodes whose public keys were
registered with `flwr supernode register` (each node signs its requests with its private key).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedhello.config import RunConfig, dump_config
from fedhello.data.node import NODE_DATA_KEY
from fedhello.engines.base import ENGINES, Engine, RunOptions
from fedhello.engines.flower.app import FLOWER_ENV, RunRequest, write_app
from fedhello.engines.flower.messages import STATE_DIR
from fedhello.engines.flower.processes import (
    HOST,
    descendants,
    executable,
    free_port,
    is_running,
    kill_group,
    spawn,
    stop_all,
    wait_for_port,
)
from fedhello.errors import ConfigError, FedHelloError
from fedhello.events import Observers
from fedhello.rundir import FLOWER_LOG, FLOWER_LOGS_DIR, read_summary
from fedhello.rundir.files import CLIENTS_DIR
from fedhello.server.resume import client_store
from fedhello.server.startup import check_server

if TYPE_CHECKING:  # imported when a deployment starts, so `python -m ...security` finds it unimported
    from fedhello.engines.flower.security import Material

CONNECTION = "fedhello-local"


def flower_env(home: Path) -> dict[str, str]:
    """Environment of every Flower process: private FLWR_HOME, `app.FLOWER_ENV`, this interpreter's scripts
    first on PATH (the SuperLink and SuperNodes spawn Flower executables), one thread unless set."""
    env = {**os.environ, **FLOWER_ENV}
    env.update(
        FLWR_HOME=str(home),
        PATH=str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        MKL_NUM_THREADS=env.get("MKL_NUM_THREADS", "1"),
    )
    return env


def node_config(values: Mapping[str, Any]) -> str:
    """A `--node-config` value: space-separated key=value pairs, strings quoted as TOML strings (Flower parses
    every value as TOML, so a bare path would be refused)."""
    return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


class LocalDeployment:
    """A SuperLink and `supernodes` SuperNodes on 127.0.0.1, as child processes of this one; with `tls`
    over HTTPS, with `node_auth` (which implies TLS, as Flower requires) only registered SuperNodes.

    `node_configs[i]` adds keys to node i's `--node-config` (e.g. `{"data-path": "/data/node0.csv"}`); `env`
    adds variables to every process's environment; `isolation` is the SuperNodes' (`flower.isolation`); `database`
    is the SuperLink's state file (`--database`: runs and SuperNode registrations survive `restart_superlink`;
    without it the state is in memory and a restarted SuperLink knows no node: their launchers start them again);
    `heartbeat_s` the SuperNodes' `--heartbeat-interval` (Flower's 30 s when None: a node is counted lost after
    about two)."""

    def __init__(
        self,
        supernodes: int,
        workdir: Path | None = None,
        *,
        tls: bool = False,
        node_auth: bool = False,
        node_configs: Sequence[Mapping[str, Any]] = (),
        env: Mapping[str, str] | None = None,
        isolation: str = "process",
        database: Path | None = None,
        heartbeat_s: float | None = None,
    ) -> None:
        if node_configs and len(node_configs) != supernodes:
            raise FedHelloError(f"{len(node_configs)} node configs for {supernodes} SuperNodes")
        self.supernodes = supernodes
        self.node_configs = list(node_configs)
        self.isolation = isolation
        self.database = database
        self.heartbeat_s = heartbeat_s
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fedhello-flower-"))
        self.home = self.workdir / "flwr-home"
        self.logs = self.workdir / "logs"
        self.env = {**flower_env(self.home), **(env or {})}
        self.tls = tls or node_auth
        self.node_auth = node_auth
        self.material: Material | None = None
        self.port = 0
        self.superlink: subprocess.Popen | None = None
        self.nodes: list[subprocess.Popen] = []
        self.node_ports: list[int] = []  # each SuperNode's runtime API port (its ClientApps connect there)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> LocalDeployment:
        from fedhello.engines.flower import security

        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        security.require_tls_off_loopback(self.address, self.tls)
        if self.tls:
            nodes = self.supernodes if self.node_auth else 0
            self.material = security.generate(self.workdir / "tls", nodes=nodes)
        self.start_superlink()
        self.write_connection()  # `flwr supernode register` needs it
        for i in range(self.supernodes):
            key = None
            if self.material and self.node_auth:
                node_key = self.material.node_keys[i]
                self.register(node_key.public)
                key = node_key.private
            self.add_node(i, key)
        if self.isolation == "process":  # each node starts its executor once its runtime API listens
            for node, port in zip(self.nodes, self.node_ports, strict=True):
                wait_for_port(port, node)
        return self

    def start_superlink(self) -> subprocess.Popen:
        """Start the SuperLink on `self.port` (its state in `self.database`, if set) and wait until it listens."""
        link = [executable("flower-superlink"), *self.superlink_security(), "--host", HOST, "--port", str(self.port)]
        if self.database is not None:
            link += ["--database", str(self.database)]
        self.superlink = spawn(link, self.env, self.logs / "superlink.log", self.workdir)
        wait_for_port(self.port, self.superlink)
        return self.superlink

    def restart_superlink(self, sig: int = signal.SIGKILL, grace: float = 10.0) -> set[int]:
        """Send `sig` to the SuperLink process alone (a crash, with SIGKILL), give what it started (its SuperExec, a
        running ServerApp) `grace` seconds to notice and exit on its own, stop what is left, and start the SuperLink
        again on the same port and database. Returns the pids that were running. The SuperNodes keep running."""
        assert self.superlink is not None, "start() first"
        link = self.superlink
        family = descendants([link.pid]) if link.poll() is None else set()
        with contextlib.suppress(ProcessLookupError):
            os.kill(link.pid, sig)
        link.wait(timeout=grace)
        deadline = time.monotonic() + grace
        while any(is_running(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in family:  # what did not exit by itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stop_all([link])  # its process group, if anything is left there
        self.start_superlink()
        return family | {link.pid}

    def superlink_security(self) -> list[str]:
        """The SuperLink's TLS / node-authentication flags."""
        if self.material is None:
            return ["--insecure"]
        m = self.material
        flags = ["--ssl-ca-certfile", str(m.ca_cert), "--ssl-certfile", str(m.server_cert)]
        flags += ["--ssl-keyfile", str(m.server_key)]
        return flags + (["--enable-supernode-auth"] if self.node_auth else [])

    def add_node(self, partition: int, key: Path | None = None) -> subprocess.Popen:
        """Start a SuperNode serving `partition` (of `supernodes`), logging to logs/supernode-<n>.log and
        stopped with the deployment; with TLS it trusts the deployment's CA, with `key` (an OpenSSH private
        key whose public key is registered) it authenticates."""
        tls = ["--root-certificates", str(self.material.ca_cert)] if self.material else ["--insecure"]
        auth = ["--auth-supernode-private-key", str(key)] if key else []
        # fedhello's launcher of flower-supernode: the same program with a 0.1 s idle poll instead of 3 s, which
        # with --isolation process starts the node's ClientApp executor as its own child (supernode.py)
        node = [sys.executable, "-m", "fedhello.engines.flower.supernode", *tls, *auth, "--superlink", self.address]
        self.node_ports.append(free_port())
        values = {"partition-id": partition, "num-partitions": self.supernodes}
        if partition < len(self.node_configs):
            values.update(self.node_configs[partition])
        node += ["--host", HOST, "--port", str(self.node_ports[-1]), "--isolation", self.isolation]
        if self.heartbeat_s is not None:
            node += ["--heartbeat-interval", str(self.heartbeat_s)]
        node += ["--node-config", node_config(values)]
        log = self.logs / f"supernode-{len(self.nodes)}.log"
        self.nodes.append(spawn(node, self.env, log, self.workdir))
        return self.nodes[-1]

    def register(self, public_key: Path) -> int:
        """Register a SuperNode's public key (OpenSSH) with the SuperLink; returns its node id."""
        return int(self.flwr("supernode", "register", str(public_key))["node-id"])

    def list_nodes(self) -> list[dict[str, Any]]:
        """The SuperLink's SuperNodes as `flwr supernode list` reports them (node-id, status, ...)."""
        return list(self.flwr("supernode", "list")["nodes"])

    def flwr(self, *args: str, timeout: float = 120.0) -> dict[str, Any]:
        """Run a `flwr` command against this deployment's connection; its JSON answer, or a one-line error."""
        command = [executable("flwr"), *args, CONNECTION, "--format", "json"]
        name = f"'flwr {' '.join(args[:2])}'"
        try:
            proc = subprocess.run(
                command, env=self.env, cwd=self.workdir, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as err:
            raise FedHelloError(f"{name} did not answer within {timeout:.0f}s") from err
        answer = json_object(proc.stdout)
        if proc.returncode != 0 or not answer.get("success"):
            reason = last_lines_of(answer.get("error-message") or proc.stdout + proc.stderr)
            raise FedHelloError(f"{name} failed: {reason}")
        return answer

    def write_connection(self) -> None:
        """`flwr` reads SuperLink connections from $FLWR_HOME/config.toml."""
        import tomli_w

        connection: dict[str, Any] = {"address": self.address}
        if self.material:
            connection["root-certificates"] = str(self.material.ca_cert)
        else:
            connection["insecure"] = True
        superlink = {"default": CONNECTION, CONNECTION: connection}
        (self.home / "config.toml").write_text(tomli_w.dumps({"superlink": superlink}))

    def run_app(
        self,
        request: RunRequest,
        timeout: float | None = None,
        app: Path | None = None,
        follow: Callable[[], None] | None = None,
    ) -> subprocess.CompletedProcess:
        """Submit the fedhello app with `flwr run` and stream its logs until the run ends. `app`: a Flower app
        folder (e.g. the repository root, as `flwr run .` submits it); by default a generated one. `follow` is
        called about twice a second while the run goes on, and once after it ended (e.g. a `LogFollower`)."""
        import tomli_w

        overrides = self.workdir / "run-config.toml"
        overrides.write_text(tomli_w.dumps(request.to_run_config()))
        app = app or write_app(self.workdir / "app")
        args = [executable("flwr"), "run", str(app), CONNECTION, "--run-config", str(overrides), "--stream"]
        proc = spawn(args, self.env, self.logs / "flwr-run.log", self.workdir)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if deadline is not None and time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(args, timeout or 0.0)
                if follow:
                    follow()
                time.sleep(0.5)
        finally:
            kill_group(proc)
            if follow:
                follow()
        return subprocess.CompletedProcess(args, proc.returncode)

    def pids(self) -> list[int]:
        """Pids of the started processes not yet reaped (a reaped pid may already belong to someone else)."""
        started = [self.superlink, *self.nodes]
        return [p.pid for p in started if p is not None and p.poll() is None]

    def stop(self) -> set[int]:
        """Stop every process started here and everything they spawned (Flower starts some helpers, e.g.
        the SuperLink's `flower-superexec`, in sessions of their own); returns the pids stopped."""
        procs = [*reversed(self.nodes), self.superlink]
        return stop_all([p for p in procs if p is not None])

    def __enter__(self) -> LocalDeployment:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


@ENGINES.register("flower-deploy")
class FlowerDeployEngine(Engine):
    serves_node_data = True

    def execute(self, config: RunConfig, run_dir: Path, options: RunOptions) -> dict[str, Any]:
        """The rounds run in the SuperLink's ServerApp process: `options.observers` of this process hear only
        `on_run_end` and `close`; `output.loggers` follow every round there."""
        check_server(config)  # a missing logger package or bad lm-eval settings fail here, before anything starts
        run_dir.mkdir(parents=True, exist_ok=True)
        caller = Observers(options.observers)
        flower = config.flower
        deployment = LocalDeployment(
            flower.supernodes,
            tls=flower.tls,
            node_auth=flower.node_auth,
            node_configs=local_node_configs(config, run_dir, options.resume),
            isolation=flower.isolation,
        )
        failed = False
        try:
            deployment.start()
            resolved = deployment.workdir / "config.yaml"
            dump_config(config, resolved)
            # the caller's observers write the report (`fedhello run`'s), not the ServerApp
            request = RunRequest(
                config=str(resolved), run_dir=str(run_dir.resolve()), resume=options.resume, report=False
            )
            result = deployment.run_app(request, follow=LogFollower(run_dir / FLOWER_LOG))
            summary = read_summary(run_dir)
            if summary is None:
                failed = True
                reason = last_failure(run_dir / FLOWER_LOG) or last_lines(deployment.logs / "flwr-run.log")
                raise FedHelloError(
                    f"flwr run exited with {result.returncode}: {reason} (Flower logs: {run_dir / FLOWER_LOGS_DIR})"
                )
            caller.on_run_end(summary)
            from fedhello.engines.flower.serverapp import check_lost_clients

            check_lost_clients(run_dir)  # the results stay; the exit status says a node never trained
            return summary
        except BaseException:
            failed = True
            raise
        finally:
            deployment.stop()
            caller.close()
            if failed and deployment.logs.exists():  # keep the SuperLink/SuperNode logs of a failed run
                shutil.copytree(deployment.logs, run_dir / FLOWER_LOGS_DIR, dirs_exist_ok=True)
            shutil.rmtree(deployment.workdir, ignore_errors=True)


# flower.log lines the terminal must show as the run goes: lost clients and nodes, and why a run failed
CONSOLE_EVENTS = re.compile(r"lost client|cannot serve|did not answer|run failed|disagree")


class LogFollower:
    """Echoes the new lines of the ServerApp's `flower.log` that say something went wrong (`CONSOLE_EVENTS`) to
    `echo`, as they are written: the rounds of a deployment run in the SuperLink's process, not in this one."""

    def __init__(self, log: Path, echo: Callable[[str], None] | None = None) -> None:
        self.log = log
        self.echo = echo or (lambda line: print(f"flower: {line}", file=sys.stderr, flush=True))
        self.offset = 0
        self.partial = ""

    def __call__(self) -> None:
        try:
            with self.log.open("r", errors="replace") as f:
                f.seek(self.offset)
                text = f.read()
                self.offset = f.tell()
        except OSError:
            return  # not written yet
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()  # an unfinished last line waits for its end
        for line in lines:
            event = line.split(" ", 1)[-1]  # without the timestamp
            if CONSOLE_EVENTS.search(event):
                self.echo(event)


def node_data_configs(config: RunConfig) -> list[dict[str, str]]:
    """The `data-path` of each SuperNode started here when the nodes hold their own data (`flower.node_data`)."""
    if not config.flower.node_data:
        return []
    paths = config.flower.node_data_paths
    if len(paths) != config.flower.supernodes:
        raise ConfigError(
            "flower.node_data_paths",
            f"{len(paths)} paths for {config.flower.supernodes} SuperNodes",
            "give one data file or folder per SuperNode (flower.supernodes = federation.num_clients)",
        )
    return [{NODE_DATA_KEY: str(Path(path).expanduser().resolve())} for path in paths]


def local_node_configs(config: RunConfig, run_dir: Path, resume: bool) -> list[dict[str, str]]:
    """Each SuperNode's `--node-config` keys in a deployment started here: its data (`node_data_configs`) and
    the folder of its clients' personal state (`state-dir`), the run folder's `clients/` as on the other engines
    (these nodes share this machine). A resumed run discards the versions its crashed rounds wrote there."""
    folder = (run_dir / CLIENTS_DIR).resolve()
    client_store(folder, run_dir, resume)
    configs = node_data_configs(config) or [{} for _ in range(config.flower.supernodes)]
    return [{**values, STATE_DIR: str(folder)} for values in configs]


def json_object(text: str) -> dict[str, Any]:
    """The first JSON object in `text` (flwr's `--format json` answer), or {}."""
    start = text.find("{")
    try:
        found = json.JSONDecoder().raw_decode(text[start:])[0] if start >= 0 else {}
    except json.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


def last_failure(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    failures = [line.split(" ", 1)[-1] for line in lines if "run failed" in line]
    return failures[-1] if failures else ""


def last_lines(log: Path, count: int = 3) -> str:
    return last_lines_of(log.read_text(errors="replace") if log.exists() else "", count)


def last_lines_of(text: str, count: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-count:]) or "no output"
