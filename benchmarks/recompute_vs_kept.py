"""Benchmark 6: what recomputing activations saves and costs, per layer set and number of recomputed blocks.

A plan recomputes `r` blocks from its lowest trained layer up (`Plan.recompute`, `fedhello.models.recompute`):
those blocks keep only their input for backward and run their forward again there. For each layer set the
script measures r = 0 (activations kept) up to r = depth - 1 (recomputing the top block too saves nothing), in
one process, and prints peak training memory and CPU time per step as ratios of training every layer with
activations kept. It also measures transformers' own `gradient_checkpointing_enable` path on the top layers:
that call makes the embedding output require grad, which sends backward through every block below the lowest
trained one (what freezing saves is lost).

    OMP_NUM_THREADS=1 python benchmarks/recompute_vs_kept.py     # the default task at the bench batch, ~1 min
"""

from __future__ import annotations

from _common import batches, footer, header, parser, setup

from fedhello.resources.measure import measure_layers
from fedhello.resources.memory import meter_for


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=3, help="timed steps per measurement (median)")
    args = p.parse_args()
    header("benchmark 6: recomputed activations vs kept ones")
    s = setup(args.config, [*args.overrides])
    data = batches(s)
    n = s.num_layers
    print(f"model {s.config.model.name_or_path}, {n} layers, batch {list(data[0]['input_ids'].shape)},"
          f" memory: {meter_for(next(s.model.parameters()).device).method}")
    every = tuple(range(n))
    for r in (0, n - 1):  # process warm-up: first backward, first recomputation
        measure_layers(s.model, s.task.loss, s.layout, data, every, steps=0, warmup=1, recompute=r)
    full = measure_layers(s.model, s.task.loss, s.layout, data, every, steps=args.steps, warmup=1)
    print(f"{'layers':<14}{'recomputed':>11}{'peak MiB':>10}{'x all kept':>11}{'cpu s':>8}{'x all kept':>11}")
    sets = [every, (0, n - 1), tuple(range(n - 3, n)), tuple(range(n - 2, n))]
    for layers in sets:
        depth = n - min(layers)
        for r in range(depth):
            m = full if (layers == every and r == 0) else measure_layers(
                s.model, s.task.loss, s.layout, data, layers, steps=args.steps, warmup=1, recompute=r
            )
            print(f"{' '.join(map(str, layers)):<14}{r:>11}{m.peak_mb:>10.1f}{m.peak_mb / full.peak_mb:>11.2f}"
                  f"{m.cpu_seconds:>8.3f}{m.cpu_seconds / full.cpu_seconds:>11.2f}")
    # transformers' switch, for comparison: every block recomputes and backward reaches the embeddings
    s.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    top = tuple(range(n - 2, n))
    m = measure_layers(s.model, s.task.loss, s.layout, data, top, steps=args.steps, warmup=1)
    print(f"{' '.join(map(str, top)):<14}{'hf switch':>11}{m.peak_mb:>10.1f}{m.peak_mb / full.peak_mb:>11.2f}"
          f"{m.cpu_seconds:>8.3f}{m.cpu_seconds / full.cpu_seconds:>11.2f}   (gradient_checkpointing_enable)")
    footer()


if __name__ == "__main__":
    main()
