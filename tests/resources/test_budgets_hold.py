"""Budgets that hold: every plan of a run, measured by the run's own records, stays within its tier's budgets --
memory, total memory, time per optimizer step and layer count -- with recomputation, gradient accumulation and
rows of unequal length. Measured in fresh processes (a peak-RSS meter inside a long pytest process reads freed
memory as free and would under-report, so this could pass without checking anything)."""

import json
import math
import os
import subprocess
import sys

import pytest
import yaml

from fedhello.resources.budgets import budget_report
from fedhello.resources.cost import SLACK
from fedhello.resources.profile import Profile, cache_dir

PROFILE_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
from fedhello.config import load_config
from fedhello.experiment import build_experiment
from fedhello.resources.budgets import resolve_budgets
resolve_budgets(build_experiment(load_config(sys.argv[1])))
"""


def _python(script: str, *args: str, env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("grad_accum", [2])  # a step of two micro-batches: accumulation counted too
def test_every_plan_stays_within_every_budget_its_tier_declares(tiny_config, wide_model_dir, tmp_path, grad_accum):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FEDHELLO_CACHE": str(tmp_path / "cache")}
    tree = tiny_config.model_dump(mode="json")
    tree["model"].update(name_or_path=str(wide_model_dir), max_length=32)
    tree["train"].update(record_resources=True, max_steps=2, grad_accum=grad_accum, batch_size=64 // grad_accum)
    tree["federation"].update(num_clients=4, clients_per_round=4, rounds=3, eval_every=3)
    tree["strategy"] = {"name": "fim+gd", "fim_warmup": 1, "fim_every": 1, "depth_aware": True, "recompute": True}
    # placeholder budgets to measure the profile (budgets are not part of its cache key)
    tree["tiers"] = [{"share": 1, "memory_mb": 1e6}]
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(tree))
    _python(PROFILE_SCRIPT, str(config_path), env=env)
    [cached] = (tmp_path / "cache" / "profiles").glob("*.json")
    assert cache_dir  # the cache the runs read is the one just written
    profile = Profile.from_json(json.loads(cached.read_text()))
    assert profile.meta["micro_batches"] == grad_accum and profile.measured_recompute
    full = profile.find(range(4))
    memory, time = profile.memory, profile.time
    # budgets between what the top layers and all layers cost, taken from the run's own cost model so that each
    # is feasible: every tier must choose, the first two by recomputing; one client per tier (4 clients of about
    # 70 rows: a full batch of 64 rows each step)
    def up(value: float, unit: str = "MiB") -> float:  # with the slack budgets keep, rounded up
        return math.ceil(value * (1 + SLACK[unit]) * 10000) / 10000

    tree["tiers"] = [
        {"share": "1/4", "memory_mb": up(memory.upper(2, 2, 4))},
        {"share": "1/4", "total_memory_mb": up(profile.weights_mb + memory.upper(3, 1, 4), "MiB in total")},
        {"share": "1/4", "memory_mb": up(memory.upper(3, 1, 4)),
         "seconds_per_step": up(time.upper(3, 1, 4) * 1.05, "s"),
         "layers": 3},
        {"share": "1/4", "layers": 4},
    ]
    config_path.write_text(yaml.safe_dump(tree))
    run_dir = tmp_path / "run"
    _python(
        "import sys; from fedhello.cli import main; sys.argv = ['fedhello', *sys.argv[1:]]; main()",
        "run", str(config_path), "--out", str(run_dir), "--no-progress", "--no-report", env=env,
    )
    rows = budget_report(run_dir)
    assert sum(r["plans"] for r in rows) == 3 * 4
    for row in rows:
        over = {k: row[k] for k in ("memory_violations", "total_violations", "time_violations", "layer_violations")}
        assert not any(over.values()), (rows, over)
    # the weak tiers did recompute (so the check covered recomputing plans) and their budgets were binding
    assert rows[0]["recomputing_plans"] > 0 or rows[1]["recomputing_plans"] > 0, rows
    assert rows[0]["peak_mb_max"] < full.peak_mb and rows[0]["lowest_layer"] < 2
