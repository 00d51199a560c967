"""Benchmark 2: fedhello's local training throughput vs a bare peft training loop on the same batches
(target: >= 0.95x).

fedhello = one full `LocalTrainer.train` call (load the global state, freeze for the plan, AdamW, DataLoader,
train, extract the upload). Bare = the textbook loop on the same peft model: set requires_grad for the same
LoRA tensors, AdamW, iterate a DataLoader with the same seed, forward/backward/step. The two alternate
(ABAB...) in one process and the ratio of the median samples per CPU-second of the process is reported
(robust on a shared machine; the wall-clock ratio is printed too).

Both sides are credited the work they did: fedhello's samples come from the trainer's own step count
(`update.metrics["steps"]`, which `train.max_steps` may cap: 3 steps of 16 = 48 of 64 samples on the default
config), and the bare loop runs exactly as many batches. (Until 2026-12-04 both rates divided by the whole 64
samples while the trainer stopped at 48, and the script printed a ratio of 1.318.)

    OMP_NUM_THREADS=1 python benchmarks/throughput_vs_peft.py            # ~1-2 min on 2 idle cores
    python benchmarks/throughput_vs_peft.py --repeats 7 --samples 128
"""

from __future__ import annotations

import statistics
import time

import torch
from _common import cap_note, footer, header, parser, setup, work_done
from torch.utils.data import DataLoader

from fedhello.models.adapter import extract_state
from fedhello.models.layers import keys_for_layers
from fedhello.patterns import tier_layers
from fedhello.plan import Plan
from fedhello.training import LocalTrainer


def bare_loop(model, task, names, data, batch_size, lr, weight_decay, seed, batches) -> int:  # noqa: ANN001
    """`batches` forward/backward/step iterations over a seeded DataLoader (epoch after epoch); the samples seen."""
    wanted = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in wanted)
    optimizer = torch.optim.AdamW(
        [p for n, p in model.named_parameters() if n in wanted], lr=lr, weight_decay=weight_decay
    )
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=generator, collate_fn=task.collate)
    model.train()
    done = samples = 0
    while done < batches:
        for batch in loader:
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done, samples = done + 1, samples + len(batch["labels"])
            if done == batches:
                break
    return samples


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--samples", type=int, default=64, help="samples of the client (train.max_steps may stop it early)")
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
    print(cap_note(len(s.train), cfg))
    rates: dict[str, list[float]] = {"fedhello": [], "bare": []}
    walls: dict[str, list[float]] = {"fedhello": [], "bare": []}
    batches = 0  # the bare loop runs as many batches as the trainer's record says it did
    seen: dict[str, int] = {}
    for rep in range(args.repeats + 1):  # the first repetition is a warm-up and is dropped
        order = ("fedhello", "bare") if rep % 2 == 0 else ("bare", "fedhello")  # rep 0 runs fedhello first
        for which in order:
            started, cpu_started = time.perf_counter(), time.process_time()
            if which == "fedhello":
                update = trainer.train(0, plan, state, s.train, seed=rep)
                batches, seen[which] = work_done(update, len(s.train), cfg)
            else:
                seen[which] = bare_loop(
                    s.model, s.task, names, s.train, cfg.batch_size, cfg.lr, cfg.weight_decay, rep, batches
                )
            cpu, wall = time.process_time() - cpu_started, time.perf_counter() - started
            if rep:
                rates[which].append(seen[which] / cpu)
                walls[which].append(seen[which] / wall)
        if seen["fedhello"] != seen["bare"]:
            raise SystemExit(f"the loops did different work: {seen}")
        if rep:
            print(
                f"  repetition {rep}: {seen['fedhello']} samples each; samples per CPU-s fedhello"
                f" {rates['fedhello'][-1]:.2f}, bare {rates['bare'][-1]:.2f}",
                flush=True,
            )
    fed, bare = statistics.median(rates["fedhello"]), statistics.median(rates["bare"])
    wall = statistics.median(walls["fedhello"]) / statistics.median(walls["bare"])
    print(
        f"median samples per CPU-second: fedhello {fed:.2f}, bare peft {bare:.2f}; ratio {fed / bare:.3f}"
        f" (target >= 0.95); wall-clock ratio {wall:.3f}"
    )
    footer()


if __name__ == "__main__":
    main()
