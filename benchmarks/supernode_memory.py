"""What one SuperNode costs in memory: fedhello's launcher, the Flower SuperNode it supervises and the ClientApp
executor it starts, against Flower's own `flower-supernode` started on the same SuperLink, measured in one run.

A SuperLink on loopback, one node started as `python -m fedhello.engines.flower.supernode --isolation process`
(launcher -> node, executor) and one as Flower's `flower-supernode --isolation process`; once both have settled
(`--settle` seconds, idle: no run), the resident set size (VmRSS) of every process is read from /proc. The executor
holds torch and, from the first task, the model: its size here is its size before any task. Linux only.

    python benchmarks/supernode_memory.py        # ~40 s
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from fedhello.engines.flower.deploy import LocalDeployment
from fedhello.engines.flower.processes import HOST, descendants, executable, free_port, spawn, wait_for_port
from fedhello.engines.flower.supernode import NODE_PROCESS


def rss_mib(pid: int) -> float:
    """The process's resident set size in MiB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)


def role(pid: int) -> str:
    command = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    if "fedhello.engines.flower.executor" in command:
        return "executor"
    return "node" if NODE_PROCESS in command else "launcher"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settle", type=float, default=20.0, help="seconds to let the processes finish their imports")
    args = p.parse_args()
    print("# one SuperNode's memory: fedhello's launcher vs Flower's flower-supernode (idle)")
    print(f"command: {' '.join([os.path.relpath(sys.argv[0])] + sys.argv[1:])}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    started = time.monotonic()
    with LocalDeployment(1) as deployment:
        up = time.monotonic() - started
        port = free_port()
        flower_node = spawn(
            [executable("flower-supernode"), "--insecure", "--superlink", deployment.address, "--host", HOST]
            + ["--port", str(port), "--isolation", "process"],
            deployment.env,
            deployment.logs / "flower-supernode.log",
            deployment.workdir,
        )
        wait_for_port(port, flower_node)
        time.sleep(args.settle)
        launcher = deployment.nodes[0]
        ours = {launcher.pid: "launcher", **{pid: role(pid) for pid in descendants([launcher.pid])}}
        sizes = {pid: rss_mib(pid) for pid in ours}
        flower = rss_mib(flower_node.pid)
    print(f"fedhello node up (launcher started, runtime API listening) in {up:.1f} s")
    print(f"{'process':34s} {'RSS MiB':>8s}")
    for pid, name in sorted(ours.items(), key=lambda item: item[1]):
        print(f"{'fedhello ' + name:34s} {sizes[pid]:8.1f}")
    node = sum(size for pid, size in sizes.items() if ours[pid] != "executor")
    print(f"{'flower-supernode (Flower alone)':34s} {flower:8.1f}")
    print(f"launcher + node / flower-supernode: {node / flower:.2f}x ({node - flower:+.1f} MiB for the supervision)")
    print(f"with its executor: {sum(sizes.values()):.1f} MiB per node")


if __name__ == "__main__":
    main()
