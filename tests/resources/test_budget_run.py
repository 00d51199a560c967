"""A run whose tiers declare memory budgets instead of layer counts, end to end on the tiny model."""

import json
import math

import pytest

from fedhello.config import config_from_dict
from fedhello.engines import ENGINES
from fedhello.errors import ConfigError
from fedhello.resources.budgets import budget_report
from fedhello.resources.measure import Measurement
from fedhello.resources.profile import Profile, load_or_measure


def synthetic_profile():
    # memory = 10 + 20 * depth + 1 * count (MiB) on the 4-layer tiny model
    sets = [(), (3,), (0,), (2, 3), (0, 1), (0, 1, 2, 3), (1, 2, 3)]
    measurements = [Measurement(s, 10.0 + 20 * (4 - min(s) if s else 0) + len(s), 0.01) for s in sets]
    return Profile(4, "cpu", "synthetic", [8, 16], measurements)


def budget_config(tiny_config, **strategy):
    tree = tiny_config.model_dump(mode="json")
    tree["tiers"] = [
        {"share": "1/2", "memory_mb": 55.0},  # top 2 cost 52: two layers, lowest >= 2
        {"share": "1/2", "memory_mb": 75.0, "layers": 2},  # depth 3 costs 72: lowest >= 1
    ]
    tree["strategy"] = {"name": "rgd", "pattern": "bottleneck", **strategy}
    tree["train"]["record_resources"] = True
    tree["federation"].update(rounds=2, clients_per_round=4)
    return config_from_dict(tree)


@pytest.fixture
def cached_profile(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDHELLO_CACHE", str(tmp_path / "cache"))

    def seed(config):
        load_or_measure(config, "cpu", synthetic_profile)

    return seed


def test_budget_tiers_run_end_to_end_within_their_floors(tiny_config, cached_profile, tmp_path):
    config = budget_config(tiny_config, depth_aware=True)
    cached_profile(config)
    run_dir = tmp_path / "run"
    ENGINES.get("local")().run(config, run_dir, show_progress=False)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    floors = {0: 2, 1: 1}
    for record in records:
        for client in record["clients"]:
            assert len(client["layers"]) == 2
            assert min(client["layers"]) >= floors[client["tier"]], client
            assert client["step_seconds"] > 0 and math.isfinite(client["peak_mem_mb"]) and client["peak_mem_mb"] >= 0
    # a resident-set meter may see no growth for a client that reuses freed memory, but never for all of them
    assert max(c["peak_mem_mb"] for r in records for c in r["clients"]) > 0
    rows = budget_report(run_dir)
    assert [r["layers"] for r in rows] == [2, 2]  # tier 0's count was resolved from its budget
    assert [r["memory_mb"] for r in rows] == [55.0, 75.0]
    assert sum(r["plans"] for r in rows) == 2 * 4
    assert all(r["lowest_layer"] >= floors[r["tier"]] for r in rows if r["plans"])


def test_without_depth_awareness_budget_tiers_get_only_a_count(tiny_config, cached_profile, tmp_path):
    config = budget_config(tiny_config)
    config.train.record_resources = False
    cached_profile(config)
    ENGINES.get("local")().run(config, tmp_path / "run", show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lowest = min(min(c["layers"]) for r in records for c in r["clients"])
    assert lowest < 2, "rgd with the bottleneck pattern favours layer 0, which the budget floors exclude"
    assert all("peak_mem_mb" not in c for r in records for c in r["clients"])


def test_budget_below_the_cheapest_plan_is_a_config_error(tiny_config, cached_profile):
    from fedhello.server import build_federation

    config = budget_config(tiny_config)
    config.tiers[0].memory_mb = 20.0  # the top layer alone costs 31
    cached_profile(config)
    with pytest.raises(ConfigError, match="tiers.0"):
        build_federation(config)


def test_depth_aware_without_a_budget_tier_changes_nothing_and_says_so(tiny_config):
    from fedhello.methods.compatibility import budget_note
    from fedhello.server import build_federation

    config = tiny_config.model_copy(deep=True)
    config.strategy.depth_aware = True
    assert build_federation(config).client_constraints() == [None] * config.federation.num_clients
    assert "no effect" in budget_note(config)
    assert budget_note(tiny_config) is None


def test_a_tier_needs_a_count_or_a_budget():
    with pytest.raises(ConfigError, match="layers, memory_mb, memory_fraction, total_memory_mb or seconds_per_step"):
        config_from_dict({"tiers": [{"share": 1}]})


def test_dry_run_shows_the_plans_the_measured_profile_admits(tiny_config, cached_profile):
    from fedhello.cli.dry_run import describe_budget_plans

    config = budget_config(tiny_config, depth_aware=True)
    assert "no measured profile cached" in "\n".join(describe_budget_plans(config, 4))
    cached_profile(config)
    text = "\n".join(describe_budget_plans(config, 4))
    # synthetic memory = 10 + 20 * depth + count: tier 0 (55 MiB) trains 2 layers from layer 2 up, tier 1 (75 MiB,
    # 2 layers) reaches layer 1
    assert "budget plans (measured profile" in text and "recompute off" in text
    assert "tier 0:\n    budget -> at most 2 layers; 2 layers reach down to layer 2" in text
    assert "tier 1:\n    budget -> at most 2 layers; 2 layers reach down to layer 1" in text


@pytest.mark.usefixtures("exact_budgets")
def test_a_memory_fraction_is_a_share_of_the_profiles_all_layer_training_memory(tiny_config, cached_profile):
    from fedhello.server import build_federation

    config = budget_config(tiny_config, depth_aware=True)
    # synthetic: all 4 layers cost 10 + 80 + 4 = 94 MiB; 0.56 of it = 52.64 -> two layers from layer 2 up (52)
    config.tiers[0] = config.tiers[0].model_copy(update={"memory_mb": None, "memory_fraction": 0.56})
    cached_profile(config)
    federation = build_federation(config)
    assert federation.config.tiers[0].memory_mb == pytest.approx(0.56 * 94)
    constraint = federation.tier_constraints[0]
    assert (constraint.max_layers, constraint.min_layer) == (2, 2)
