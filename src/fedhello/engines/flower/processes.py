"""Process supervision for the local Flower deployment: free ports, waiting for a listener, finding Flower's
executables, and stopping a process with everything it spawned (from /proc, where Flower helpers start in
sessions of their own). Linux-first; where /proc is missing only process groups are stopped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fedhello.errors import FedHelloError

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on HOST that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Block until something listens on HOST:port; fail in one line if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FedHelloError(f"'{' '.join(map(str, proc.args))}' exited with code {proc.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise FedHelloError(f"nothing listens on {HOST}:{port} after {timeout:.0f}s")


def executable(name: str) -> str:
    """Path of a Flower command, preferring this interpreter's environment."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise FedHelloError(f"'{name}' not found (fix: pip install 'flwr[simulation]>=1.42,<1.43')")
    return found


def spawn(args: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen:
    """Start a process in a session of its own (so `kill_group` stops it with what it spawns), its output
    appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)


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


def stop_all(procs: list[subprocess.Popen], sig: int = signal.SIGTERM) -> set[int]:
    """Stop `procs` (in order, with `sig`, then SIGKILL) and everything they spawned; returns every pid that was
    stopped. SIGKILL is asynchronous, so this waits (up to 5 s) until the descendants are gone."""
    running = [p.pid for p in procs if p.poll() is None]  # a reaped pid may already belong to someone else
    family = descendants(running)
    for proc in procs:
        kill_group(proc, sig)
    for pid in family:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while any(is_running(pid) for pid in family) and time.monotonic() < deadline:
        time.sleep(0.05)
    return set(running) | family
