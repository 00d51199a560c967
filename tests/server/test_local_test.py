"""Personalised evaluation (`federation.local_test`): the spread of per-client scores, and a tiny run whose
per-client global scores are those of the global model on each client's own held-out split."""

from __future__ import annotations

import json

import pytest
import torch

from fedhello.data.local_test import local_test_due, split_local_test
from fedhello.engines import ENGINES
from fedhello.methods import method_config
from fedhello.models.adapter import extract_state, load_state
from fedhello.plan import LOCAL_TEST, ClientUpdate, Plan
from fedhello.rundir.writer import final_local_test
from fedhello.server.federation import build_federation
from fedhello.server.local_test import local_test_record, spread


def update(cid: int, samples: float, **scores: float) -> ClientUpdate:
    metrics = {f"{LOCAL_TEST}samples": samples, **{f"{LOCAL_TEST}{k}": v for k, v in scores.items()}}
    return ClientUpdate(cid, Plan((0,)), {}, 10, metrics)


def test_per_client_scores_are_summarised_unweighted_and_weighted_by_local_test_size():
    record = local_test_record(
        [update(4, 1, **{"global": 0.2, "personal": 1.0}), update(1, 3, **{"global": 0.6, "personal": 0.5})]
    )
    g, p = record["global"], record["personal"]
    assert g["clients"] == {"1": 0.6, "4": 0.2}
    assert g["mean"] == pytest.approx(0.4) and g["weighted_mean"] == pytest.approx((0.2 * 1 + 0.6 * 3) / 4)
    assert g["std"] == pytest.approx(0.2) and (g["min"], g["max"]) == (0.2, 0.6)
    assert p["weighted_mean"] == pytest.approx((1.0 + 0.5 * 3) / 4) and p["mean"] == pytest.approx(0.75)
    assert local_test_record([ClientUpdate(0, Plan((0,)), {}, 1, {"train_loss": 1.0})]) is None, "off: no key"
    assert set(local_test_record([update(0, 2, **{"global": 0.5})])) == {"global"}, "no personal part: global only"
    assert spread({7: 0.5}, {7: 0.0})["weighted_mean"] == 0.5
    records = [{"round": 1, "local_test": record}, {"round": 2, "accuracy": 0.3}]
    final = final_local_test(records)
    assert final["local_test_round"] == 1 and final["final_local_personal"] == p["weighted_mean"]
    assert final["final_local_global_unweighted"] == g["mean"] and final_local_test([{"round": 1}]) == {}


def test_the_local_test_split_is_seeded_per_client_and_disjoint_from_training(tiny_config):
    federation = build_federation(tiny_config)
    data = federation.partitioner.load_partition(2)
    train, test = split_local_test(data, 0.25, 3, 2)
    assert len(test) == round(0.25 * len(data)) and len(train) + len(test) == len(data)
    again = split_local_test(data, 0.25, 3, 2)[1]
    assert test["input_ids"] == again["input_ids"] and split_local_test(data, 0.0, 3, 2) == (data, None)
    config = tiny_config.model_copy(deep=True)
    config.federation.local_test, config.federation.eval_every, config.federation.rounds = 0.2, 2, 5
    assert [r for r in range(1, 6) if local_test_due(config.federation, r)] == [2, 4, 5]


def test_a_tiny_run_reports_each_clients_global_score_on_its_own_split(tiny_config, tmp_path):
    """FedSA-LoRA, one round: every sampled client scores the global model it received (the initial adapter) and
    its personalised model on its own split; the weighted mean equals the global model evaluated on those splits
    here, independently."""
    tree = tiny_config.model_dump(mode="json")
    tree["federation"].update(rounds=1, local_test=0.3)
    tree["output"]["plot"] = False
    config = method_config(tree, "fedsa-lora")
    summary = ENGINES.get("local")().run(config, tmp_path / "run", show_progress=False)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    scores = record["local_test"]
    sampled = sorted(str(c["id"]) for c in record["clients"])
    assert sorted(scores["global"]["clients"]) == sampled == sorted(scores["personal"]["clients"])

    federation = build_federation(config)  # the same seeded initial adapter the server sent in round 1
    names = [n for n in federation.layout]
    initial = {n: t.clone() for n, t in extract_state(federation.model, names).items()}
    total, weighted = 0, 0.0
    for cid in sampled:
        split = federation.client_test(int(cid))
        load_state(federation.model, initial)
        accuracy = federation.task.evaluate(federation.model, split)["accuracy"]
        assert accuracy == pytest.approx(scores["global"]["clients"][cid]), cid
        total, weighted = total + len(split), weighted + accuracy * len(split)
        assert len(federation.client_data(int(cid))) == next(
            c["num_samples"] for c in record["clients"] if str(c["id"]) == cid
        ), "clients train on their data less the local test split"
    assert scores["global"]["weighted_mean"] == pytest.approx(weighted / total)
    assert summary["final_local_global"] == pytest.approx(weighted / total)
    assert summary["final_local_personal"] == scores["personal"]["weighted_mean"]
    assert torch.isfinite(torch.tensor(list(scores["personal"]["clients"].values()))).all()
