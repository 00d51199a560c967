"""Benchmark: per-round overhead of the Flower engines (simulation, loopback deployment) vs the local engine.

First, what a fresh ClientApp process pays before it can train (Flower's default `--isolation subprocess`
starts one per message): a new interpreter measures its imports, the data source load, tokenizer and model
load, tokenisation, partitioning, one client's local training, and the message sizes.

Then the same config runs once per engine, one after the other in this process (deployment: a SuperLink and
`flower.supernodes` SuperNodes on 127.0.0.1; `flower-deploy` uses fedhello's long-lived executor per node,
`flower-deploy/subprocess` Flower's process per message). Per engine it reports the wall time of round 1
(includes the Flower runtime's start: Ray actors / SuperNodes connecting, first model loads), the mean of the
later rounds (steady state), and the total including start and stop; ratios are against the local engine.

    OMP_NUM_THREADS=1 python benchmarks/flower_overhead.py                  # ~5-10 min on 2 idle cores
    OMP_NUM_THREADS=1 python benchmarks/flower_overhead.py --engines local flower-deploy --set federation.rounds=5
"""

from __future__ import annotations

import json
import subprocess
import sys
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


# a fresh interpreter doing what a per-message flwr-clientapp does before and while it trains; it prints the
# seconds since it was started (argv[2]) after its imports, then one JSON line of component times
STARTUP = """
import sys, time
imported = time.time() - float(sys.argv[2])
import json
from collections import defaultdict
import fedhello.engines.flower.clientapp  # torch, transformers, datasets, flwr and fedhello
imported = time.time() - float(sys.argv[2])
from fedhello import experiment
from fedhello.config import config_from_dict
from fedhello.engines.flower.messages import state_to_record
from fedhello.plan import Plan
from fedhello.server import Coordinator, build_federation
from fedhello.tasks import TASKS
from fedhello.training import LocalTrainer

sys.path.insert(0, sys.argv[3])  # the benchmarks folder
from _common import timed
times = defaultdict(float)

config = config_from_dict(json.loads(open(sys.argv[1]).read()))
task_class = TASKS.get(config.task)
experiment.load_source = timed(times, "data source load", experiment.load_source)
task_class.__init__ = timed(times, "tokenizer load", task_class.__init__)
task_class.build_model = timed(times, "model load + LoRA", task_class.build_model)
task_class.preprocess = timed(times, "tokenisation", task_class.preprocess)
started = time.perf_counter()
federation = build_federation(config)
times["build (total)"] = time.perf_counter() - started
started = time.perf_counter()
data = federation.client_data(0)
times["partitioning"] = time.perf_counter() - started
trainer = LocalTrainer(federation.model, federation.task, federation.layout, config.train)
coordinator = Coordinator(federation)
state = coordinator.global_state
layers = tuple(range(federation.num_layers))
started = time.perf_counter()
update = trainer.train(0, Plan(layers=layers), state, data, 0)
times["local training (1 client)"] = time.perf_counter() - started
down = sum(a.numpy().nbytes for a in state_to_record(state).values())
up = sum(a.numpy().nbytes for a in state_to_record(update.tensors).values())
print(json.dumps({"imports": imported, **times, "message down (bytes)": down, "message up (bytes)": up}))
"""


def startup_components(config_path: Path) -> dict[str, float]:
    """Component times of one fresh ClientApp-like process (see STARTUP)."""
    out = subprocess.run(
        [sys.executable, "-c", STARTUP, str(config_path), repr(time.time()), str(Path(__file__).resolve().parent)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--engines", nargs="+", default=["local", "flower-sim", "flower-deploy", "flower-deploy/subprocess"])
    p.add_argument("--no-startup", action="store_true", help="skip the fresh-process component measurement")
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
        if not args.no_startup:
            config_file = Path(tmp) / "config.json"
            config_file.write_text(config.model_dump_json())
            components = startup_components(config_file)
            print("\n| what a fresh ClientApp process pays | seconds |\n|---|---|")
            for name, value in components.items():
                shown = f"{value / 1e6:.2f} MB" if "bytes" in name else f"{value:.2f}"
                print(f"| {name.replace(' (bytes)', '')} | {shown} |")
        for engine in args.engines:
            name, _, isolation = engine.partition("/")
            run_config = config.model_copy(deep=True)
            if isolation:
                run_config.flower.isolation = isolation
            run_dir = Path(tmp) / engine.replace("/", "-")
            started = time.perf_counter()
            ENGINES.get(name)().run(run_config, run_dir, show_progress=False)
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
