"""Benchmark 2: fedhello's local training throughput vs a bare peft training loop on the same batches
(target: >= 0.95x).

fedhello = one full `LocalTrainer.train` call (load the global state, freeze for the plan, AdamW, DataLoader,
train, extract the upload). Bare = the textbook loop on the same peft model: set requires_grad for the same
LoRA tensors, AdamW, iterate a DataLoader with the same seed, forward/backward/step. The two alternate
(ABAB...) in one process and the ratio of the median samples per CPU-second of the process is reported
(robust on a shared machine; the wall-clock ratio is printed too).

    OMP_NUM_THREADS=1 python benchmarks/throughput_vs_peft.py            # ~1-2 min on 2 idle cores
    python benchmarks/throughput_vs_peft.py --repeats 7 --samples 128
"""

from __future__ import annotations

import statistics
import time

import torch
from _common import footer, header, parser, setup
from torch.utils.data import DataLoader

from fedhello.allocation.patterns import tier_layers
from fedhello.models.adapter import extract_state
from fedhello.models.layers import keys_for_layers
from fedhello.plan import Plan
from fedhello.training import LocalTrainer


def bare_loop(model, task, names, data, batch_size, lr, weight_decay, seed) -> None:  # noqa: ANN001
    wanted = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in wanted)
    optimizer = torch.optim.AdamW([p for n, p in model.named_parameters() if n in wanted], lr=lr,
                                  weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for batch in DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=task.collate):
        loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--samples", type=int, default=64, help="samples per client (one local epoch)")
    p.add_argument("--repeats", type=int, default=3, help="alternating repetitions of each loop")
    p.add_argument("--tier", type=int, default=-1, help="which tier's plan to train (default: the largest)")
    args = p.parse_args()
    header("benchmark 2: fedhello LocalTrainer vs a bare peft loop")
    s = setup(args.config, args.overrides, samples=args.samples)
    cfg = s.config.train
    k = s.config.tiers[args.tier].layers or s.num_layers
    plan = Plan(tier_layers(s.config.strategy.pattern, s.num_layers, k))
    names = keys_for_layers(s.layout, plan.layers, head=True)
    state = extract_state(s.model, list(s.layout))
    trainer = LocalTrainer(s.model, s.task, s.layout, cfg)
    print(f"plan: layers {plan.layers} of {s.num_layers}, {len(s.train)} samples, batch {cfg.batch_size}")
    rates: dict[str, list[float]] = {"fedhello": [], "bare": []}
    walls: dict[str, list[float]] = {"fedhello": [], "bare": []}
    for rep in range(args.repeats + 1):  # the first repetition is a warm-up and is dropped
        order = ("fedhello", "bare") if rep % 2 == 0 else ("bare", "fedhello")
        for which in order:
            started, cpu_started = time.perf_counter(), time.process_time()
            if which == "fedhello":
                trainer.train(0, plan, state, s.train, seed=rep)
            else:
                bare_loop(s.model, s.task, names, s.train, cfg.batch_size, cfg.lr, cfg.weight_decay, rep)
            if rep:
                rates[which].append(len(s.train) / (time.process_time() - cpu_started))
                walls[which].append(len(s.train) / (time.perf_counter() - started))
        if rep:
            print(f"  repetition {rep}: samples per CPU-s fedhello {rates['fedhello'][-1]:.2f}, bare"
                  f" {rates['bare'][-1]:.2f}", flush=True)
    fed, bare = statistics.median(rates["fedhello"]), statistics.median(rates["bare"])
    wall = statistics.median(walls["fedhello"]) / statistics.median(walls["bare"])
    print(f"median samples per CPU-second: fedhello {fed:.2f}, bare peft {bare:.2f}; ratio {fed / bare:.3f}"
          f" (target >= 0.95); wall-clock ratio {wall:.3f}")
    footer()


if __name__ == "__main__":
    main()
