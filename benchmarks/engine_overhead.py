"""Benchmark 3: engine overhead (allocation + aggregation + FIM + bookkeeping) as a share of round wall
time (target <= 5 %).

Runs the local engine's round loop with a timed `Coordinator`; client training is timed in `dispatch`.
Round wall time comes from metrics.jsonl. The overhead is a share of the rounds' time, so it depends on how much
local work a client does: the script prints the optimizer steps from the trainer's records and how many clients
`train.max_steps` stopped early (the default config: 3 steps, not full epochs). Evaluation is reported but not
counted as overhead (how often to evaluate is the user's choice). FIM is measured per refresh and amortised over
the config's own schedule.

    OMP_NUM_THREADS=1 python benchmarks/engine_overhead.py                # 3 rounds, ~2-3 min on 2 idle cores
    python benchmarks/engine_overhead.py --rounds 8
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _common import cap_note, footer, header, parser, timed

from fedhello.config import load_config
from fedhello.rundir import read_metrics
from fedhello.runtime import quiet_libraries
from fedhello.seeding import client_seed
from fedhello.server import Coordinator, build_federation
from fedhello.server.loop import run_rounds
from fedhello.training import LocalTrainer

TIMES: dict[str, float] = defaultdict(float)


class TimedCoordinator(Coordinator):
    configure = timed(TIMES, "configure", Coordinator.configure)
    refresh_importance = timed(TIMES, "fim", Coordinator.refresh_importance)
    aggregate = timed(TIMES, "aggregation", Coordinator.aggregate)
    evaluate = timed(TIMES, "evaluation", Coordinator.evaluate)


def refreshes(rounds: int, warmup: int, every: int) -> int:
    return sum(1 for r in range(1, rounds + 1) if r >= warmup + 1 and (r - warmup - 1) % every == 0)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    header("benchmark 3: engine overhead per round")
    quiet_libraries()
    original = load_config(args.config, args.overrides)
    config = load_config(args.config, [
        *args.overrides, f"federation.rounds={args.rounds}", f"federation.eval_every={args.rounds}",
        "strategy.fim_warmup=1", f"strategy.fim_every={args.rounds + 1}", "output.plot=false",
        "output.save_adapter=false",
    ])
    federation = build_federation(config)
    coordinator = TimedCoordinator(federation)
    trainer = LocalTrainer(federation.model, federation.task, federation.layout, config.train)

    def dispatch(round_num, plans, state):  # noqa: ANN001, ANN202
        started = time.perf_counter()
        updates = [
            trainer.train(cid, plan, state, federation.client_data(cid), client_seed(config.seed, round_num, cid))
            for cid, plan in plans.items()
        ]
        TIMES["training"] += time.perf_counter() - started
        return updates

    with tempfile.TemporaryDirectory() as tmp:
        run_rounds(federation, coordinator, dispatch, Path(tmp) / "run")
        records = read_metrics(Path(tmp) / "run")
    wall = sum(r["wall_seconds"] for r in records)
    fim = TIMES["fim"]
    allocation = TIMES["configure"] - fim
    known = TIMES["training"] + TIMES["configure"] + TIMES["aggregation"] + TIMES["evaluation"]
    bookkeeping = max(wall - known, 0.0)
    n_fim = sum(1 for r in records if r.get("importance_refresh"))
    print(f"{len(records)} rounds, {config.federation.clients_per_round} clients/round, round wall total {wall:.1f} s")
    clients = [c for r in records for c in r["clients"]]
    steps = [int(c["steps"]) for c in clients]
    capped = sum(1 for c in clients if "capped by" in cap_note(c["num_samples"], config.train))
    print(f"local work (the trainer's records): {sum(steps)} optimizer steps in {len(clients)} client updates "
          f"({min(steps)}-{max(steps)} each); {capped} of them stopped by train.max_steps={config.train.max_steps} "
          "before the end of their local epochs")
    for name, value in (("client training", TIMES["training"]), ("allocation", allocation),
                        ("FIM (all refreshes)", fim), ("aggregation", TIMES["aggregation"]),
                        ("evaluation", TIMES["evaluation"]), ("bookkeeping (rest)", bookkeeping)):
        print(f"  {name:<22}{value:>9.2f} s {100 * value / wall:>7.2f} %")
    rest = allocation + TIMES["aggregation"] + bookkeeping
    train_round = (wall - fim - TIMES["evaluation"]) / len(records)  # a round without FIM and evaluation
    per_refresh = fim / max(n_fim, 1)
    sched = refreshes(original.federation.rounds, original.strategy.fim_warmup, original.strategy.fim_every)
    rounds = original.federation.rounds
    amortised = per_refresh * sched / rounds
    print(f"overhead without FIM (allocation + aggregation + bookkeeping): {100 * rest / (wall - fim):.2f} % of round"
          f" wall (evaluation included in the wall)")
    print(f"FIM: {per_refresh:.2f} s per refresh over {federation.proxy.num_rows} proxy samples; the config's schedule"
          f" has {sched} refreshes in {rounds} rounds -> {amortised:.2f} s per round")
    share = (rest / len(records) + amortised) / (train_round + amortised)
    print(f"engine overhead incl. amortised FIM, per round without evaluation: {100 * share:.2f} % (target <= 5 %)")
    footer()


if __name__ == "__main__":
    main()
