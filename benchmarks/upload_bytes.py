"""Benchmark 4: upload bytes per client vs a full-LoRA upload; the LoRA part must equal k/L exactly.

Each tier's plan (every GD pattern) is trained for one step through the real `LocalTrainer`, and the bytes
of the returned update are compared with those of a client that trains every layer.

    OMP_NUM_THREADS=1 python benchmarks/upload_bytes.py                 # ~30 s
"""

from __future__ import annotations

from fractions import Fraction

from _common import footer, header, parser, setup, tier_counts

from fedhello.models.adapter import extract_state
from fedhello.models.layers import HEAD
from fedhello.patterns import PATTERNS
from fedhello.plan import Plan, state_bytes
from fedhello.training import LocalTrainer


def main() -> None:
    args = parser(__doc__).parse_args()
    header("benchmark 4: upload bytes vs full-LoRA upload")
    s = setup(args.config, [*args.overrides, "train.max_steps=1"], samples=16)
    trainer = LocalTrainer(s.model, s.task, s.layout, s.config.train)
    state = extract_state(s.model, list(s.layout))
    head = state_bytes({n: t for n, t in state.items() if s.layout[n] == HEAD})
    full = trainer.train(0, Plan(tuple(range(s.num_layers))), state, s.train, seed=0).num_bytes
    print(f"full-LoRA upload (all {s.num_layers} layers + head): {full} bytes (head {head})")
    print(f"{'tier':<5}{'pattern':<18}{'layers':<14}{'bytes':>10}{'x full':>8}{'LoRA share':>12}{'k/L':>7}{'exact':>7}")
    ok = True
    for tier, k in enumerate(tier_counts(s)):
        for pattern, fn in PATTERNS.items():
            layers = fn(s.num_layers, k)
            sent = trainer.train(0, Plan(layers), state, s.train, seed=0).num_bytes
            share = Fraction(sent - head, full - head)
            exact = share == Fraction(k, s.num_layers)
            ok &= exact
            print(
                f"{tier:<5}{pattern:<18}{' '.join(map(str, layers)):<14}{sent:>10}{sent / full:>8.3f}"
                f"{str(share):>12}{str(Fraction(k, s.num_layers)):>7}{'yes' if exact else 'NO':>7}"
            )
    print("all LoRA shares equal k/L exactly" if ok else "MISMATCH: some upload is not exactly the trained share")
    footer()
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
