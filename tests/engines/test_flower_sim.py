"""Parity: Flower's simulation runtime (Ray) and the in-process engine give the same run, for every method.

All method presets share ONE Flower simulation (`FlowerSimEngine.run_many`), so Ray starts once and the
test stays cheap; each method still gets its own ServerApp loop, run folder and ClientApp federation.
"""

from __future__ import annotations

from pathlib import Path

import ray  # a declared dependency: a broken install must fail here, not skip the parity test
from flower_helpers import assert_same_run, metrics

from fedhello.engines import ENGINES
from fedhello.methods import METHODS, method_config


def test_flower_simulation_matches_local_engine_for_every_method(tiny_config, tmp_path):
    tree = tiny_config.model_dump(mode="json")
    tree["federation"]["rounds"] = 2  # round 2 refreshes FIM (fim_warmup 1), so the importance path is covered
    tree["output"]["plot"] = False
    runs = [(method_config(tree, name), tmp_path / "sim" / name) for name in METHODS]
    for config, sim_dir in runs:
        ENGINES.get("local")().run(config, tmp_path / "local" / sim_dir.name, show_progress=False)
    summaries = ENGINES.get("flower-sim")().run_many(runs)

    assert [s["rounds"] for s in summaries] == [2] * len(METHODS)
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
    log = (sim / "flower.log").read_text()
    assert "6 SuperNodes serve all 6 partitions" in log, "not every virtual SuperNode answered"
    assert "lost client" not in log, [line for line in log.splitlines() if "lost client" in line][:1]
