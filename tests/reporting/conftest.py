"""Run folders written by hand, shaped like `fedhello run` output, so report tests need no training (file names from
`fedhello.rundir`, the one place they are defined)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from fedhello.rundir import ALLOCATIONS_FILE, CONFIG_FILE, IMPORTANCE_FILE, METRICS_FILE, PARTITION_FILE

NUM_LAYERS = 4
TIER_LAYERS = [1, 2, 4]


def write_run_dir(
    path: Path,
    *,
    rounds: int = 4,
    eval_every: int = 1,
    fim_rounds: tuple[int, ...] = (2, 4),
    partition: bool = True,
    peak_mem: bool = False,
    strategy: str = "fim+gd",
    seed: int = 0,
) -> Path:
    """A plausible run folder: 6 clients in 3 tiers, 3 sampled per round, 4 layers, 4 labels."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    tiers = [0, 1, 2, 0, 1, 2]
    config = {
        "name": path.name,
        "strategy": {"name": strategy, "pattern": "bottleneck"},
        "partition": {"kind": "iid"},
        "federation": {"num_clients": 6, "clients_per_round": 3, "rounds": rounds, "eval_every": eval_every},
        "tiers": [{"share": 1 / 3, "layers": k} for k in TIER_LAYERS],
    }
    (path / CONFIG_FILE).write_text(yaml.safe_dump(config))
    lines, rows = [], []
    for round_num in range(1, rounds + 1):
        sampled = sorted(rng.choice(6, 3, replace=False).tolist())
        clients = []
        for cid in sampled:
            k = TIER_LAYERS[tiers[cid]]
            layers = sorted(rng.choice(NUM_LAYERS, k, replace=False).tolist())
            client = {"id": cid, "tier": tiers[cid], "layers": layers, "num_samples": 50,
                      "train_loss": float(1.5 - 0.1 * round_num), "seconds": 0.5 * k, "bytes_up": 1000.0 * k + 500}
            if peak_mem:
                client["peak_mem_mb"] = 100.0 + 20 * k
                client["step_seconds"] = 0.1 * k
            clients.append(client)
            rows.append([round_num, cid, tiers[cid], " ".join(map(str, layers))])
        evaluated = round_num % eval_every == 0 or round_num == rounds
        lines.append(
            {
                "round": round_num,
                "accuracy": 0.3 + 0.05 * round_num if evaluated else None,
                "loss": 1.4 - 0.1 * round_num if evaluated else None,
                "train_loss": float(1.5 - 0.1 * round_num),
                "wall_seconds": 2.0,
                "train_seconds": sum(c["seconds"] for c in clients),
                "bytes_up": sum(c["bytes_up"] for c in clients),
                "bytes_down": 5000 * len(clients),
                "clients": clients,
                "importance_refresh": round_num in fim_rounds,
            }
        )
    (path / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in lines))
    with (path / ALLOCATIONS_FILE).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["round", "client", "tier", "layers"])
        writer.writerows(rows)
    if fim_rounds:
        records = [
            {"round": r, "scores": rng.random(NUM_LAYERS).tolist(), "levels": [0, 1, 2, 1],
             "probabilities": [0.125, 0.25, 0.375, 0.25]}
            for r in fim_rounds
        ]
        (path / IMPORTANCE_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    if partition:
        stats = {
            "partition": {"kind": "iid"},
            "label_names": ["money", "music", "sport", "tech"],
            "tiers": config["tiers"],
            "num_layers": NUM_LAYERS,
            "proxy_size": 16,
            "test_size": 100,
            "clients": [
                {"id": c, "tier": tiers[c], "budget": TIER_LAYERS[tiers[c]], "num_samples": 40,
                 "label_counts": [10, 10, 10, 10]}
                for c in range(6)
            ],
        }
        (path / PARTITION_FILE).write_text(json.dumps(stats))
    return path


@pytest.fixture
def make_run_dir(tmp_path: Path) -> Callable[..., Path]:
    """`make_run_dir(name, **options)` writes a hand-made run folder under tmp_path."""
    return lambda name, **options: write_run_dir(tmp_path / name, **options)
