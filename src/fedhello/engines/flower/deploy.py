"""`--engine flower-deploy`: a real Flower deployment on loopback, started and stopped by fedhello.

`LocalDeployment` starts one `flower-superlink --insecure` and `flower.supernodes` `flower-supernode
--insecure` processes on 127.0.0.1 (free ports, a private FLWR_HOME), each SuperNode with
`--node-config "partition-id=i num-partitions=K"` (plus keys of its own, e.g. the `data-path` of a node
that holds its own data); the engine submits the app (`app.write_app`) with `flwr run` and waits for it.
Every process is started in its own session and stopped with what it spawned
(`processes.stop_all`) in a `finally` block, so nothing outlives a failed run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedhello.config import RunConfig, dump_config
from fedhello.data.node import NODE_DATA_KEY
from fedhello.engines.base import ENGINES, Engine, RunOptions
from fedhello.engines.flower.app import FLOWER_ENV, RunRequest, write_app
from fedhello.engines.flower.processes import (
    HOST,
    executable,
    free_port,
    kill_group,
    spawn,
    stop_all,
    wait_for_port,
)
from fedhello.errors import ConfigError, FedHelloError
from fedhello.events import Observers
from fedhello.rundir import FLOWER_LOG, FLOWER_LOGS_DIR, read_summary
from fedhello.server.observers import run_observers

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
    """A SuperLink and `supernodes` SuperNodes on 127.0.0.1, as child processes of this one.

    `node_configs[i]` adds keys to node i's `--node-config` (e.g. `{"data-path": "/data/node0.csv"}`); `env`
    adds variables to every process's environment."""

    def __init__(
        self,
        supernodes: int,
        workdir: Path | None = None,
        node_configs: Sequence[Mapping[str, Any]] = (),
        env: Mapping[str, str] | None = None,
        isolation: str = "process",
    ) -> None:
        if node_configs and len(node_configs) != supernodes:
            raise FedHelloError(f"{len(node_configs)} node configs for {supernodes} SuperNodes")
        self.supernodes = supernodes
        self.isolation = isolation
        self.node_configs = list(node_configs) or [{} for _ in range(supernodes)]
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fedhello-flower-"))
        self.home = self.workdir / "flwr-home"
        self.logs = self.workdir / "logs"
        self.env = {**flower_env(self.home), **(env or {})}
        self.port = 0
        self.superlink: subprocess.Popen | None = None
        self.nodes: list[subprocess.Popen] = []
        self.node_ports: list[int] = []  # each SuperNode's runtime API port (its ClientApps connect there)
        self.executors: list[subprocess.Popen] = []  # isolation=process: one fedhello executor per SuperNode

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> LocalDeployment:
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        link = [executable("flower-superlink"), "--insecure", "--host", HOST, "--port", str(self.port)]
        self.superlink = spawn(link, self.env, self.logs / "superlink.log", self.workdir)
        wait_for_port(self.port, self.superlink)
        for i in range(self.supernodes):
            self.node_ports.append(free_port())
            values = {"partition-id": i, "num-partitions": self.supernodes, **self.node_configs[i]}
            node = [
                executable("flower-supernode"),
                "--insecure",
                "--superlink",
                self.address,
                "--host",
                HOST,
                "--port",
                str(self.node_ports[i]),
                "--node-config",
                node_config(values),
                "--isolation",
                self.isolation,
            ]
            self.nodes.append(spawn(node, self.env, self.logs / f"supernode-{i}.log", self.workdir))
        if self.isolation == "process":
            for i in range(self.supernodes):
                self.start_executor(i)
        self.write_connection()
        return self

    def start_executor(self, i: int) -> None:
        """The long-lived ClientApp executor of SuperNode i (`executor.py`), once its runtime API listens."""
        wait_for_port(self.node_ports[i], self.nodes[i])
        args = [
            sys.executable,
            "-m",
            "fedhello.engines.flower.executor",
            "--runtime-api-address",
            f"{HOST}:{self.node_ports[i]}",
            "--insecure",
            "--parent-pid",
            str(self.nodes[i].pid),
        ]
        self.executors.append(spawn(args, self.env, self.logs / f"executor-{i}.log", self.workdir))

    def write_connection(self) -> None:
        """`flwr` reads SuperLink connections from $FLWR_HOME/config.toml."""
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
            f'address = "{self.address}"\ninsecure = true\n'
        )

    def run_app(
        self, request: RunRequest, timeout: float | None = None, app: Path | None = None
    ) -> subprocess.CompletedProcess:
        """Submit the fedhello app with `flwr run` and stream its logs until the run ends. `app`: a Flower app
        folder (e.g. the repository root, as `flwr run .` submits it); by default a generated one."""
        import tomli_w

        overrides = self.workdir / "run-config.toml"
        overrides.write_text(tomli_w.dumps(request.to_run_config()))
        app = app or write_app(self.workdir / "app")
        args = [executable("flwr"), "run", str(app), CONNECTION, "--run-config", str(overrides), "--stream"]
        proc = spawn(args, self.env, self.logs / "flwr-run.log", self.workdir)
        try:
            proc.wait(timeout=timeout)
        finally:
            kill_group(proc)
        return subprocess.CompletedProcess(args, proc.returncode)

    def pids(self) -> list[int]:
        """Pids of the started processes not yet reaped (a reaped pid may already belong to someone else)."""
        return [p.pid for p in [self.superlink, *self.nodes, *self.executors] if p is not None and p.poll() is None]

    def stop(self) -> set[int]:
        """Stop every process started here and everything they spawned (Flower starts some helpers, e.g.
        the SuperLink's `flower-superexec`, in sessions of their own); returns the pids stopped."""
        procs = [*reversed(self.executors), *reversed(self.nodes), self.superlink]
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
        run_observers(config)  # a logger whose package is missing fails here, before anything starts
        run_dir.mkdir(parents=True, exist_ok=True)
        caller = Observers(options.observers)
        deployment = LocalDeployment(
            config.flower.supernodes, node_configs=node_data_configs(config), isolation=config.flower.isolation
        )
        failed = False
        try:
            deployment.start()
            resolved = deployment.workdir / "config.yaml"
            dump_config(config, resolved)
            request = RunRequest(config=str(resolved), run_dir=str(run_dir.resolve()), resume=options.resume)
            result = deployment.run_app(request)
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


def last_failure(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    failures = [line.split(" ", 1)[-1] for line in lines if "run failed" in line]
    return failures[-1] if failures else ""


def last_lines(log: Path, count: int = 3) -> str:
    lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(lines[-count:]) or "no output"
