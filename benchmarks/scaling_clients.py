"""Benchmark 5: 10 -> 1,000 registered clients, peak memory of the local engine (target: flat).

Each size runs in a fresh subprocess (one round, `clients_per_round` sampled clients, one local step each,
iid partitions, batch size 1 and strategy `full`, so that every size trains the same layers on the same
batch shape even when 1,000 clients hold 1-2 samples each); the child reports its peak RSS (`ru_maxrss`).
Registered clients are only a tier label and a partition index, so memory should not grow with their number.

    OMP_NUM_THREADS=1 python benchmarks/scaling_clients.py                # 10, 100, 1000: ~1-2 min
    python benchmarks/scaling_clients.py --sizes 10 1000 10000
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import footer, header, parser


def child(config_path: str, overrides: list[str], size: int) -> None:
    from fedhello.config import load_config
    from fedhello.engines import ENGINES
    from fedhello.runtime import quiet_libraries

    quiet_libraries()
    config = load_config(config_path, [
        *overrides, f"federation.num_clients={size}", "federation.rounds=1", "train.max_steps=1", "train.batch_size=1",
        "strategy.name=full",
        "partition.kind=iid", "data.max_test_samples=64", "output.plot=false", "output.save_adapter=false",
    ])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        ENGINES.get("local")().run(config, Path(tmp) / "run", show_progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"size": size, "peak_mb": peak, "seconds": time.perf_counter() - started}))


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    p.add_argument("--child", type=int, help=argparse_hidden())
    args = p.parse_args()
    if args.child:
        child(args.config, args.overrides, args.child)
        return
    header("benchmark 5: registered clients vs peak memory (local engine)")
    results = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--config", args.config, "--child", str(size)]
        for o in args.overrides:
            cmd += ["--set", o]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(out))
        r = results[-1]
        print(f"  {r['size']:>6} clients: peak RSS {r['peak_mb']:.1f} MiB, run {r['seconds']:.1f} s", flush=True)
    base = results[0]["peak_mb"]
    for r in results:
        print(f"  {r['size']:>6} clients: peak x{r['peak_mb'] / base:.3f} of {results[0]['size']} clients")
    footer()


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
