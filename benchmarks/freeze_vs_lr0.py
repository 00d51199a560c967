"""Benchmark 1: real freezing vs the official lr=0 approach, per tier: step time and peak memory ratios.

lr=0 (the official Fed-HeLLo code): every LoRA tensor requires grad and has AdamW state; the layers a
client does not train sit in a parameter group with learning rate 0. Real freezing (fedhello): those
tensors have requires_grad=False. Both train the same layers on the same batches, measured alternately in
one process. Peak memory = training memory above the loaded model (see docs/benchmarks.md for the method).
Step time = median CPU time of the process per step (robust on a shared machine; wall time is printed too).

    OMP_NUM_THREADS=1 python benchmarks/freeze_vs_lr0.py                # ~1-2 min on 2 idle cores
    python benchmarks/freeze_vs_lr0.py --patterns bottleneck triangle inverted_triangle uniform --steps 5
"""

from __future__ import annotations

import statistics

from _common import batches, footer, header, parser, setup, tier_counts

from fedhello.patterns import PATTERNS
from fedhello.resources.measure import measure_layers
from fedhello.resources.memory import meter_for


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--patterns", nargs="+", default=["bottleneck", "inverted_triangle"], choices=list(PATTERNS))
    p.add_argument("--steps", type=int, default=3, help="timed steps per measurement (median)")
    p.add_argument("--repeats", type=int, default=1, help="alternating freeze/lr0 repetitions (medians)")
    args = p.parse_args()
    header("benchmark 1: real freezing vs lr=0 (official)")
    s = setup(args.config, args.overrides)
    data = batches(s)
    print(
        f"model {s.config.model.name_or_path}, {s.num_layers} layers, batch {list(data[0]['input_ids'].shape)},"
        f" memory: {meter_for(next(s.model.parameters()).device).method}"
    )
    measure_layers(s.model, s.task.loss, s.layout, data, range(s.num_layers), steps=0, warmup=1)  # process warm-up
    print(
        f"{'tier':<5}{'pattern':<18}{'layers':<14}{'MiB freeze':>11}{'MiB lr0':>9}{'ratio':>7}"
        f"{'cpu s freeze':>13}{'cpu s lr0':>10}{'ratio':>7}{'wall ratio':>11}"
    )
    for tier, k in enumerate(tier_counts(s)):
        for pattern in args.patterns:
            layers = PATTERNS[pattern](s.num_layers, k)
            runs: dict[str, list] = {"freeze": [], "lr0": []}
            for rep in range(args.repeats):
                for mode in ("freeze", "lr0") if rep % 2 == 0 else ("lr0", "freeze"):
                    runs[mode].append(
                        measure_layers(
                            s.model, s.task.loss, s.layout, data, layers, mode=mode, steps=args.steps, warmup=1
                        )
                    )
            mem = {m: statistics.median(x.peak_mb or 0.0 for x in v) for m, v in runs.items()}
            sec = {m: statistics.median(x.cpu_seconds for x in v) for m, v in runs.items()}
            wall = {m: statistics.median(x.step_seconds for x in v) for m, v in runs.items()}
            print(
                f"{tier:<5}{pattern:<18}{' '.join(map(str, layers)):<14}{mem['freeze']:>11.1f}{mem['lr0']:>9.1f}"
                f"{mem['freeze'] / mem['lr0']:>7.2f}{sec['freeze']:>13.3f}{sec['lr0']:>10.3f}"
                f"{sec['freeze'] / sec['lr0']:>7.2f}{wall['freeze'] / wall['lr0']:>11.2f}",
                flush=True,
            )
    print("ratio = freeze / lr0 (below 1: real freezing is cheaper)")
    footer()


if __name__ == "__main__":
    main()
