"""Differential privacy in whole runs on the tiny model: the epsilon every round reports is the accounting library's
own, a config that would overspend its budget is refused in one line, a run set to stop does so cleanly, and a
resumed private run equals an uninterrupted one."""

from __future__ import annotations

import json

import dp_accounting
import pytest
import torch
from safetensors.torch import load_file

from fedhello.config import config_from_dict
from fedhello.engines import ENGINES
from fedhello.errors import ConfigError


def private(config, **privacy):  # noqa: ANN001, ANN003, ANN201
    tree = config.model_dump(mode="json")
    tree["output"]["plot"] = False
    tree["aggregation"]["weighting"] = "uniform"
    tree["privacy"] = {"mode": "server", "noise_multiplier": 1.5, "clip_norm": 0.5, **privacy}
    return config_from_dict(tree)


def records(run_dir):  # noqa: ANN001, ANN201
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def library_epsilon(rounds: int, z: float, clients: int, per_round: int, delta: float) -> float:
    accountant = dp_accounting.rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    event = dp_accounting.SampledWithoutReplacementDpEvent(clients, per_round, dp_accounting.GaussianDpEvent(z / 2))
    accountant.compose(event, rounds)
    return accountant.get_epsilon(delta)


def test_every_round_reports_the_accounting_librarys_epsilon(tiny_config, tmp_path):
    budget = library_epsilon(3, 1.5, 6, 3, 1e-5) * 1.001  # the 3 rounds fit; a 4th would not, but none is due
    adaptive = {"adaptive_clip": True, "clipped_count_stddev": 1.0}
    config = private(tiny_config, mode="client", **adaptive, max_epsilon=budget, on_exhausted="stop")
    run_dir = tmp_path / "run"
    summary = ENGINES.get("local")().run(config, run_dir, show_progress=False)
    assert "stopped" not in summary and len(records(run_dir)) == 3  # ending at the last round is no early stop
    lines = records(run_dir)
    for k, record in enumerate(lines, start=1):  # 3 of 6 clients a round, z = 1.5
        assert record["privacy"]["epsilon"] == pytest.approx(library_epsilon(k, 1.5, 6, 3, 1e-5), rel=1e-9)
        assert all("dp.unclipped" in client for client in record["clients"])  # the clients clipped
    assert lines[0]["privacy"]["clip_norm"] == 0.5 != lines[1]["privacy"]["clip_norm"]  # adapted between rounds
    assert summary["epsilon"] == lines[-1]["privacy"]["epsilon"] and summary["delta"] == 1e-5


def test_a_budget_the_rounds_would_overspend_is_refused_in_one_line(tiny_config):
    with pytest.raises(ConfigError) as err:
        private(tiny_config, max_epsilon=2.0)
    message = str(err.value)
    assert "\n" not in message and message.startswith("config field 'privacy.max_epsilon': 3 rounds")
    assert "federation.rounds <= " in message and "privacy.on_exhausted: stop" in message


def test_a_run_stops_cleanly_before_the_round_that_would_overspend(tiny_config, tmp_path):
    budget = library_epsilon(2, 1.5, 6, 3, 1e-5) * 1.001  # two rounds fit, three do not
    config = private(tiny_config, max_epsilon=budget, on_exhausted="stop")
    config.federation.eval_subset = 4  # only a last round is scored on the whole test split
    run_dir = tmp_path / "run"
    summary = ENGINES.get("local")().run(config, run_dir, show_progress=False)
    lines = records(run_dir)
    assert [r["round"] for r in lines] == [1, 2] and "privacy budget" in lines[-1]["stopped"]
    assert summary["stopped"] == lines[-1]["stopped"] and summary["epsilon"] <= budget
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()  # a finished run's outputs
    assert lines[-1]["accuracy"] is not None


def test_a_resumed_private_run_equals_an_uninterrupted_one(tiny_config, tmp_path):
    config = private(tiny_config, adaptive_clip=True, clipped_count_stddev=1.0)
    config.checkpoint.every = 1
    reference = tmp_path / "reference"
    ENGINES.get("local")().run(config, reference, show_progress=False)
    shorter = config.model_copy(deep=True)
    shorter.federation.rounds = 2
    resumed = tmp_path / "resumed"
    ENGINES.get("local")().run(shorter, resumed, show_progress=False)
    ENGINES.get("local")().run(config, resumed, show_progress=False, resume=True)
    a, b = (load_file(str(d / "adapter" / "adapter_model.safetensors")) for d in (resumed, reference))
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert [r["privacy"] for r in records(resumed)] == [r["privacy"] for r in records(reference)]


def test_a_bare_yaml_off_turns_privacy_off(tiny_config):
    tree = tiny_config.model_dump(mode="json")
    tree["privacy"] = {"mode": False}  # what YAML makes of `mode: off`
    assert config_from_dict(tree).privacy.mode == "off"
