"""Parity: Flower's simulation runtime (Ray) and the in-process engine give the same run."""

from __future__ import annotations

import pytest
from flower_helpers import assert_same_run

from fedhello.engines import ENGINES

ray = pytest.importorskip("ray")


def test_flower_simulation_matches_local_engine(tiny_config, tmp_path):
    config = tiny_config.model_copy(deep=True)
    config.federation.rounds = 2  # round 2 refreshes FIM (fim_warmup 1), so the importance path is covered
    ENGINES.get("local")().run(config, tmp_path / "local", show_progress=False)
    summary = ENGINES.get("flower-sim")().run(config, tmp_path / "sim", show_progress=False)

    assert summary["rounds"] == 2
    assert_same_run(tmp_path / "local", tmp_path / "sim")
    assert (tmp_path / "sim" / "importance.jsonl").read_text() == (tmp_path / "local" / "importance.jsonl").read_text()
    log = (tmp_path / "sim" / "flower.log").read_text()
    assert "6 SuperNodes serve all 6 partitions" in log and "lost client" not in log
    assert not ray.is_initialized(), "the engine shuts down the Ray runtime it started"
