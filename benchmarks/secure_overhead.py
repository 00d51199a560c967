"""Secure aggregation's per-round overhead (`secure.enabled`): bytes per stage and client, and seconds, against a
plain round's upload and download, measured in one run on the configured adapter.

N clients (the config's tiers dealt round-robin, each training its tier's layers under the bottleneck pattern) mask a
random change of the tensors they upload; the four stages run in this process (`fedhello.secure`, the in-process
transport), so bytes are the payloads' raw data (arrays, byte strings, 8 per number; no Flower framing) and seconds
are this machine's key agreement, secret sharing, encryption and masking, every client's and the server's, serial.
Each N runs without dropout and with `--drop` clients lost after sharing their keys (the server then reconstructs
their mask keys and removes their pairwise masks).

    OMP_NUM_THREADS=1 python benchmarks/secure_overhead.py                        # ~1 min
    OMP_NUM_THREADS=1 python benchmarks/secure_overhead.py --clients 3 6 12 24
"""

from __future__ import annotations

import time

import numpy as np
import torch
from _common import footer, header, parser, setup

from fedhello.aggregation.base import expected_shapes
from fedhello.aggregation.fedavg import masked_fedavg
from fedhello.models.adapter import extract_state
from fedhello.patterns import tier_layers
from fedhello.plan import ClientUpdate, Plan, state_bytes
from fedhello.secure import STAGES, InProcessExchange, SecureSettings, local_clients, secure_sum


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--clients", type=int, nargs="+", default=[3, 6, 12], help="clients per round to measure")
    p.add_argument("--drop", type=int, default=1, help="clients lost after sharing keys, in the second run of each N")
    args = p.parse_args()
    header("secure aggregation: per-round overhead vs a plain round")
    s = setup(args.config, args.overrides, samples=16)
    state = extract_state(s.model, list(s.layout))
    settings = SecureSettings(
        bits=s.config.secure.bits, clip_range=s.config.secure.clip_range, threshold=s.config.secure.threshold
    )
    down = state_bytes(state)
    tiers = [t.layers or s.num_layers for t in s.config.tiers]
    print(f"model {s.config.model.name_or_path}, LoRA r={s.config.lora.r}: global adapter {down} bytes; tiers {tiers}")
    print(f"settings: bits {settings.bits}, clip_range {settings.clip_range}, threshold {settings.threshold}")
    for n in args.clients:
        plans = {c: Plan(tier_layers("bottleneck", s.num_layers, tiers[c % len(tiers)])) for c in range(n)}
        gen = torch.Generator().manual_seed(n)
        deltas = {
            c: {k: torch.randn(shape, generator=gen) * 1e-3 for k, shape in expected_shapes(p, state, s.layout).items()}
            for c, p in plans.items()
        }
        updates = [
            ClientUpdate(c, plans[c], {k: state[k] + d for k, d in delta.items()}, 1) for c, delta in deltas.items()
        ]
        plain_up = float(np.mean([state_bytes(u.tensors) for u in updates]))
        started = time.perf_counter()
        masked_fedavg(state, updates)
        plain_s = time.perf_counter() - started
        for drop in sorted({0, min(args.drop, n - 2)}):
            members = {k: [c for c in range(n) if k in deltas[c]] for k in state}
            members = {k: ids for k, ids in members.items() if ids}
            shapes = {k: tuple(state[k].shape) for k in members}
            exchange = InProcessExchange(local_clients(deltas), {c: STAGES[2] for c in range(n - drop, n)})
            started = time.perf_counter()
            result = secure_sum(exchange, range(n), members, shapes, settings)
            secure_s = time.perf_counter() - started
            print(f"\n## {n} clients, {drop} dropped after sharing keys (threshold {result.threshold})")
            print(f"{'stage':<14}{'up B/client':>14}{'down B/client':>15}{'seconds':>10}")
            total_up = total_down = masked = 0.0
            for stage in STAGES:
                traffic = result.traffic.get(stage, {})
                # up: the clients that answered the stage; down: every client it was sent to
                ups = [t["up"] for t in traffic.values() if t["up"]]
                up = float(np.mean(ups)) if ups else 0.0
                dn = float(np.mean([t["down"] for t in traffic.values()])) if traffic else 0.0
                total_up, total_down = total_up + up, total_down + dn
                masked = up if stage == STAGES[2] else masked
                print(f"{stage:<14}{up:>14.0f}{dn:>15.0f}{result.seconds.get(stage, 0.0):>10.3f}")
            left_out = sum(1 for k in members if k in result.excluded and len(members[k]) < 2)
            print(
                f"upload: {total_up:.0f} B/client, of which masked arrays {masked:.0f} B (as many bytes as the float32 "
                f"tensors they mask): protocol x{total_up / masked:.3f} of the same tensors' plain upload"
            )
            print(
                f"plain round: {plain_up:.0f} B/client, every planned tensor ({left_out} of them with one uploader, "
                f"which secure aggregation leaves out); download: {down} B adapter + {total_down:.0f} B protocol "
                f"(x{(down + total_down) / down:.3f})"
            )
            print(
                f"time: {secure_s:.2f} s for the round ({secure_s / n:.3f} s per client, serial) vs plain masked "
                f"FedAvg {plain_s * 1000:.1f} ms; released {len(result.sums)} tensors, withheld {len(result.excluded)}"
            )
    footer()


if __name__ == "__main__":
    main()
