"""Parity: Flower's simulation runtime (Ray) and the in-process engine give the same run, for every method.

All method presets share ONE Flower simulation (`FlowerSimEngine.run_many`), so Ray starts once and the
test stays cheap; each method still gets its own ServerApp loop, run folder and ClientApp federation.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray  # a declared dependency: a broken install must fail here, not skip the parity test
import torch
from flower_helpers import assert_same_run, metrics
from safetensors.torch import load_file

from fedhello.engines import ENGINES
from fedhello.methods import METHODS, method_config
from fedhello.rundir.files import CLIENTS_DIR

# the budget-true variants of a preset (`-rc`, `-bt`) equal it on tiers without budgets: one budget run below
# covers them, with plans that recompute
VARIANTS = tuple(name for name in METHODS if name.endswith(("-rc", "-bt")))
# a partition-free reference (centralized: one client holding all data) has another client count, so it cannot
# share the simulation's SuperNodes; it is FedIT's code path, which the parity covers
SEPARATE = tuple(name for name in METHODS if METHODS.get(name).partition_free)


def recompute_profile():
    """A 4-layer profile where memory = 10 + 20 * blocks kept + count + 0.5 * blocks recomputed (MiB)."""
    from fedhello.resources.measure import Measurement
    from fedhello.resources.profile import Profile

    plans = [((3,), 0), ((0,), 0), ((2, 3), 0), ((0, 1), 0), ((0, 1, 2, 3), 0), ((0,), 3), ((2, 3), 1), ((0, 3), 3)]
    measured = [
        Measurement(layers, 10.0 + 20 * (4 - min(layers) - r) + len(layers) + 0.5 * r, 0.01, recompute=r)
        for layers, r in plans
    ]
    return Profile(4, "cpu", "synthetic", [8, 16], measured)


def test_flower_simulation_matches_local_engine_for_every_method(tiny_config, tmp_path, monkeypatch):
    from fedhello.resources.profile import load_or_measure

    tree = tiny_config.model_dump(mode="json")
    tree["federation"]["rounds"] = 2  # round 2 refreshes FIM (fim_warmup 1), so the importance path is covered
    tree["output"]["plot"] = False
    tree["federation"]["local_test"] = 0.2  # personalised evaluation travels too (update metrics, node data splits)
    names = [name for name in METHODS if name not in VARIANTS + SEPARATE]
    runs = [(method_config(tree, name), tmp_path / "sim" / name) for name in names]
    # budget-true Fed-HeLLo on a memory budget only recomputation meets for deep layers (45 MiB: one layer kept
    # reaches layer 3; recomputing, any layer): its plans carry recomputation through Flower's messages
    monkeypatch.setenv("FEDHELLO_CACHE", str(tmp_path / "cache"))
    budget_tree = {**tree, "tiers": [{"share": "1/2", "memory_mb": 45.0}, {"share": "1/2", "layers": 4}]}
    budget = method_config(budget_tree, "fed-hello-bt")
    load_or_measure(budget, "cpu", recompute_profile)
    runs.append((budget, tmp_path / "sim" / "fed-hello-bt-budget"))
    # client-side differential privacy: the clip norm travels in the plans, adaptive clipping's bit in the metrics
    privacy = {"mode": "client", "noise_multiplier": 1.0, "clip_norm": 0.5, "adaptive_clip": True}
    privacy["clipped_count_stddev"] = 1.0
    private = method_config({**tree, "privacy": privacy, "aggregation": {"weighting": "uniform"}}, "fill")
    runs.append((private, tmp_path / "sim" / "fill-private"))
    # secure aggregation: four message exchanges a round, each client's secrets kept in its node's context.state
    # between them (Ray's runtime keeps it; a lost state would make every client refuse and every round fail)
    secure_tree = {**tree, "secure": {"enabled": True}, "aggregation": {"weighting": "uniform"}}
    secure = method_config(secure_tree, "gd-bottleneck")
    runs.append((secure, tmp_path / "sim" / "gd-secure"))
    # a hostile client (poisoned in the ClientApp), FedProx, a robust rule and a server optimizer
    robust_tree = {
        **tree,
        "attack": {"hostile": 1, "kind": "scaled", "scale": 5.0},
        "aggregation": {"name": "median", "weighting": "uniform", "server_optimizer": "fedadam"},
        "train": {**tree["train"], "proximal_mu": 0.01},
    }
    runs.append((method_config(robust_tree, "fedit"), tmp_path / "sim" / "fedit-robust"))
    for config, sim_dir in runs:
        ENGINES.get("local")().run(config, tmp_path / "local" / sim_dir.name, show_progress=False)
    summaries = ENGINES.get("flower-sim")().run_many(runs)

    assert [s["rounds"] for s in summaries] == [2] * len(runs)
    budget_clients = [c for r in metrics(tmp_path / "sim" / "fed-hello-bt-budget") for c in r["clients"]]
    recomputed = [c for c in budget_clients if c.get("recompute")]
    assert recomputed, "a weak client's deep layer was fitted by recomputation"
    differing = {}
    for _, sim_dir in runs:
        try:
            assert_same_method_run(tmp_path / "local" / sim_dir.name, sim_dir)
        except AssertionError as err:
            differing[sim_dir.name] = str(err).splitlines()[0]
    assert not differing, f"flower-sim differs from local for {sorted(differing)}: {differing}"
    assert (tmp_path / "sim" / "fed-hello" / "importance.jsonl").exists(), "the FIM refresh ran"
    assert not ray.is_initialized(), "the engine shuts down the Ray runtime it started"


def assert_same_method_run(local: Path, sim: Path) -> None:
    assert_same_run(local, sim)
    # every planned client's update was accepted in both engines: a rank-truncated upload (HetLoRA,
    # FlexLoRA, LEGEND) or a B-only one (FFA-LoRA) is neither lost in transport nor refused
    for record in metrics(sim):
        assert record["rejected"] == [] and record["failed_clients"] == [], record
        assert record["clients"] and not record["skipped"], record
    if (local / "importance.jsonl").exists():
        assert (sim / "importance.jsonl").read_text() == (local / "importance.jsonl").read_text()
    for ours, theirs in zip(metrics(local), metrics(sim), strict=True):  # the same per-client local test scores
        assert _local_scores(ours) == pytest.approx(_local_scores(theirs), abs=1e-6), f"round {ours['round']}"
    # a personalised method's clients keep the same state in both engines (FedSA-LoRA's B, pFedLoRA's head)
    kept = {p.relative_to(local): load_file(str(p)) for p in sorted(local.glob(f"{CLIENTS_DIR}/*/*.safetensors"))}
    theirs = {p.relative_to(sim): load_file(str(p)) for p in sorted(sim.glob(f"{CLIENTS_DIR}/*/*.safetensors"))}
    assert kept.keys() == theirs.keys(), "different client-state versions"
    for path, state in kept.items():
        assert all(torch.allclose(t, theirs[path][n], atol=1e-5) for n, t in state.items()), f"{path} differs"
    log = (sim / "flower.log").read_text()
    assert "6 SuperNodes serve all 6 partitions" in log, "not every virtual SuperNode answered"
    assert "lost client" not in log, [line for line in log.splitlines() if "lost client" in line][:1]


def _local_scores(record: dict) -> dict[str, float]:
    """Every per-client local test score of a round record (`federation.local_test`), by kind and client."""
    kinds = record.get("local_test") or {}
    return {f"{kind}/{cid}": v for kind, stats in kinds.items() for cid, v in stats["clients"].items()}
