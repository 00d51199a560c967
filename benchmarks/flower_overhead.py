"""Benchmark: per-round overhead of the Flower engines (simulation, loopback deployment) vs the local engine.

The same config runs once per engine, one after the other in this process (deployment: a SuperLink and
`flower.supernodes` SuperNodes on 127.0.0.1). Per engine it reports the wall time of round 1 (includes
the Flower runtime's start: Ray actors / SuperNodes connecting, first model loads), the mean of the later
rounds (steady state), and the total including start and stop; ratios are against the local engine.

    OMP_NUM_THREADS=1 python benchmarks/flower_overhead.py                  # ~5-10 min on 2 busy cores
    OMP_NUM_THREADS=1 python benchmarks/flower_overhead.py --engines local flower-sim --set federation.rounds=5
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from _common import footer, header, parser

from fedhello.config import load_config
from fedhello.engines import ENGINES
from fedhello.runtime import quiet_libraries

# small enough for a shared 2-core machine; every value can be overridden with --set
SMALL = [
    "federation.num_clients=4",
    "federation.clients_per_round=2",
    "federation.rounds=3",
    "data.max_train_samples=200",
    "data.max_test_samples=100",
    "train.max_steps=2",
    "strategy.name=rgd",
    "output.plot=false",
    "flower.supernodes=2",
]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--engines", nargs="+", default=["local", "flower-sim", "flower-deploy"])
    args = p.parse_args()
    header("Flower engine overhead per round vs the local engine")
    quiet_libraries()
    config = load_config(args.config, [*SMALL, *args.overrides])
    print(
        f"config: {args.config} + {' '.join([*SMALL, *args.overrides])}\n"
        f"  {config.federation.num_clients} clients, {config.federation.clients_per_round} per round, "
        f"{config.federation.rounds} rounds, model {config.model.name_or_path}"
    )
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="flower-overhead-") as tmp:
        for engine in args.engines:
            run_dir = Path(tmp) / engine
            started = time.perf_counter()
            ENGINES.get(engine)().run(config, run_dir, show_progress=False)
            total = time.perf_counter() - started
            rounds = [json.loads(line)["wall_seconds"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
            later = rounds[1:] or rounds
            results[engine] = {"first": rounds[0], "steady": sum(later) / len(later), "total": total}
    base = results.get("local")
    print("\n| engine | round 1 s | later rounds s (mean) | total s | steady ratio | total ratio |")
    print("|---|---|---|---|---|---|")
    for engine, r in results.items():
        steady = f"{r['steady'] / base['steady']:.2f}x" if base else "-"
        total = f"{r['total'] / base['total']:.2f}x" if base else "-"
        print(f"| {engine} | {r['first']:.2f} | {r['steady']:.2f} | {r['total']:.1f} | {steady} | {total} |")
    footer()


if __name__ == "__main__":
    main()
