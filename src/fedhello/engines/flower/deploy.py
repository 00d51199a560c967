"""`--engine flower-deploy`: a real Flower deployment on loopback, started and stopped by fedhello.

`LocalDeployment` starts one `flower-superlink --insecure` and `flower.supernodes` `flower-supernode
--insecure` processes on 127.0.0.1 (free ports, a private FLWR_HOME), each SuperNode with
`--node-config "partition-id=i num-partitions=K"`; the engine submits the app with `flwr run` and
waits for it. Every process is started in its own session and killed by its id (process group) in
`stop()`, which the engine calls in a `finally` block, so nothing outlives a failed run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedhello.config import RunConfig, dump_config
from fedhello.engines.base import ENGINES, Engine
from fedhello.errors import FedHelloError
from fedhello.events import Observers, RunObserver
from fedhello.rundir import FLOWER_LOG, FLOWER_LOGS_DIR, read_summary
from fedhello.server.observers import run_observers

HOST = "127.0.0.1"
CONNECTION = "fedhello-local"
APP_PYPROJECT = """\
# A Flower app whose code is the installed fedhello package; no dependencies of its own, so Flower
# never installs anything per run (torch and friends are already in this environment).
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedhello-flower"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedhello"

[tool.flwr.app.components]
serverapp = "fedhello.engines.flower.serverapp:app"
clientapp = "fedhello.engines.flower.clientapp:app"

[tool.flwr.app.config]
config = ""
overrides = ""
run-dir = ""
resume = false
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FedHelloError(f"'{' '.join(map(str, proc.args))}' exited with code {proc.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise FedHelloError(f"nothing listens on {HOST}:{port} after {timeout:.0f}s")


def flower_env(home: Path) -> dict[str, str]:
    """Environment of every Flower process: private FLWR_HOME, no telemetry, no per-run installs,
    this interpreter's scripts first on PATH (the SuperLink and SuperNodes spawn Flower executables)."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
        PATH=bin_dir + os.pathsep + env.get("PATH", ""),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
        MKL_NUM_THREADS=env.get("MKL_NUM_THREADS", "1"),
    )
    return env


def executable(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise FedHelloError(f"'{name}' not found (fix: pip install 'flwr[simulation]>=1.42,<1.43')")
    return found


class LocalDeployment:
    """A SuperLink and `supernodes` SuperNodes on 127.0.0.1, as child processes of this one."""

    def __init__(self, supernodes: int, workdir: Path | None = None) -> None:
        self.supernodes = supernodes
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fedhello-flower-"))
        self.home = self.workdir / "flwr-home"
        self.logs = self.workdir / "logs"
        self.env = flower_env(self.home)
        self.port = 0
        self.superlink: subprocess.Popen | None = None
        self.nodes: list[subprocess.Popen] = []
        self.stopped: set[int] = set()  # every pid stop() killed (tests check none survives)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / log_name).open("ab") as log:
            # a new session per process: stop() can kill it together with the apps it spawns
            return subprocess.Popen(
                args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
            )

    def start(self) -> LocalDeployment:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.superlink = self._spawn(
            [executable("flower-superlink"), "--insecure", "--host", HOST, "--port", str(self.port)], "superlink.log"
        )
        wait_for_port(self.port, self.superlink)
        for i in range(self.supernodes):
            self.nodes.append(
                self._spawn(
                    [
                        executable("flower-supernode"),
                        "--insecure",
                        "--superlink",
                        self.address,
                        "--host",
                        HOST,
                        "--port",
                        str(free_port()),
                        "--node-config",
                        f"partition-id={i} num-partitions={self.supernodes}",
                    ],
                    f"supernode-{i}.log",
                )
            )
        self.write_connection()
        return self

    def write_connection(self) -> None:
        """`flwr` reads SuperLink connections from $FLWR_HOME/config.toml."""
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.address}"\ninsecure = true\n'
        )

    def write_app(self) -> Path:
        app = self.workdir / "app"
        app.mkdir(parents=True, exist_ok=True)
        (app / "pyproject.toml").write_text(APP_PYPROJECT)
        return app

    def run_app(self, run_config: dict[str, Any], timeout: float | None = None) -> subprocess.CompletedProcess:
        """Submit the fedhello app with `flwr run` and stream its logs until the run ends."""
        import tomli_w

        overrides = self.workdir / "run-config.toml"
        overrides.write_text(tomli_w.dumps(run_config))
        args = [
            executable("flwr"),
            "run",
            str(self.write_app()),
            CONNECTION,
            "--run-config",
            str(overrides),
            "--stream",
        ]
        with (self.logs / "flwr-run.log").open("ab") as log:
            proc = subprocess.Popen(
                args, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True
            )
            try:
                proc.wait(timeout=timeout)
            finally:
                kill_group(proc)
        return subprocess.CompletedProcess(args, proc.returncode)

    def kill_node(self, index: int) -> None:
        """Kill SuperNode `index` and what it spawned, as a crash would (used by the fault test)."""
        kill_group(self.nodes[index], signal.SIGKILL)

    def pids(self) -> list[int]:
        """Pids of the started processes not yet reaped (a reaped pid may already belong to someone else)."""
        return [p.pid for p in [self.superlink, *self.nodes] if p is not None and p.poll() is None]

    @property
    def started_pids(self) -> list[int]:
        """Pids (= process group ids) of every process this deployment started, running or not."""
        return [p.pid for p in [self.superlink, *self.nodes] if p is not None]

    def stop(self) -> None:
        """Stop every process started here and everything they spawned (Flower starts some helpers, e.g.
        the SuperLink's `flower-superexec`, in sessions of their own, so process groups are not enough)."""
        family = descendants(self.pids())
        self.stopped.update(self.pids(), family)
        for proc in [*reversed(self.nodes), self.superlink]:
            if proc is not None:
                kill_group(proc)
        for pid in family:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0  # SIGKILL is asynchronous: let the kernel finish them
        while any(is_running(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.05)

    def __enter__(self) -> LocalDeployment:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
    """Stop the process and its session (started with start_new_session, so its pgid is its pid)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)
    # children that outlived their leader (the group still exists): kill them too
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def is_running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def process_table() -> dict[int, list[str]]:
    """Every live process's /proc stat fields after the command name (state, ppid, pgrp, ...), by pid."""
    table: dict[int, list[str]] = {}
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():
        return table
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        table[int(entry.name)] = stat[stat.rindex(")") + 2 :].split()
    return table


def descendants(pids: list[int]) -> set[int]:
    """Pids of all live descendants of `pids` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for pid, fields in process_table().items():
        children.setdefault(int(fields[1]), []).append(pid)
    found: set[int] = set()
    stack = list(pids)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


@ENGINES.register("flower-deploy")
class FlowerDeployEngine(Engine):
    def run(
        self,
        config: RunConfig,
        run_dir: Path,
        *,
        show_progress: bool = True,
        resume: bool = False,
        observers: Sequence[RunObserver] = (),
    ) -> dict[str, Any]:
        """The rounds run in the SuperLink's ServerApp process: `observers` of this process hear only
        `on_run_end` and `close`; `output.loggers` follow every round there."""
        run_observers(config)  # a logger whose package is missing fails here, before anything starts
        run_dir.mkdir(parents=True, exist_ok=True)
        caller = Observers(observers)
        deployment = LocalDeployment(config.flower.supernodes)
        failed = False
        try:
            deployment.start()
            resolved = deployment.workdir / "config.yaml"
            dump_config(config, resolved)
            run_config = {"config": str(resolved), "overrides": "", "run-dir": str(run_dir.resolve()), "resume": resume}
            result = deployment.run_app(run_config)
            summary = read_summary(run_dir)
            if summary is None:
                failed = True
                reason = last_failure(run_dir / FLOWER_LOG) or last_lines(deployment.logs / "flwr-run.log")
                raise FedHelloError(
                    f"flwr run exited with {result.returncode}: {reason} (Flower logs: {run_dir / FLOWER_LOGS_DIR})"
                )
            caller.on_run_end(summary)
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


def last_failure(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    failures = [line.split(" ", 1)[-1] for line in lines if "run failed" in line]
    return failures[-1] if failures else ""


def last_lines(log: Path, count: int = 3) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(lines[-count:]) or "no output"
