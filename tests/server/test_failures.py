"""Client failures: simulated dropout and timeouts, too few updates (retry or skip), all logged per round."""

from __future__ import annotations

import json

import torch

from fedhello.config import RunConfig
from fedhello.engines import ENGINES
from fedhello.plan import ClientUpdate, Plan
from fedhello.server.loop import collect_updates, simulated_dropouts
from fedhello.server.validation import UpdateValidator

LAYOUT = {"enc.layer.0.q.lora_A.default.weight": 0, "classifier.modules_to_save.default.weight": -1}
STATE = {name: torch.zeros(2, 3) for name in LAYOUT}


def fake_dispatch(calls: list[dict[int, Plan]], seconds: float = 0.0):  # noqa: ANN201
    def dispatch(round_num, plans, state):  # noqa: ANN001, ANN202
        calls.append(dict(plans))
        return [
            ClientUpdate(cid, plan, {n: v + 1.0 for n, v in state.items()}, 5, {"seconds": seconds})
            for cid, plan in plans.items()
        ]

    return dispatch


def settings(**reliability) -> RunConfig:  # noqa: ANN003
    return RunConfig.model_validate(
        {"federation": {"num_clients": 10, "clients_per_round": 5}, "reliability": reliability}
    )


def test_dropout_draws_are_seeded_per_round_attempt_and_client():
    config = settings(dropout=0.3)
    first = simulated_dropouts(config, 4, 0, list(range(10)))
    assert first == simulated_dropouts(config, 4, 0, list(range(10)))
    # a client's fate does not depend on who else was sampled
    assert first & {2, 5} == simulated_dropouts(config, 4, 0, [2, 5])
    draws = [simulated_dropouts(config, r, 0, list(range(10))) for r in range(1, 101)]
    rate = sum(len(d) for d in draws) / 1000
    assert 0.25 < rate < 0.35, rate
    assert simulated_dropouts(settings(), 4, 0, list(range(10))) == set()


def test_too_few_updates_are_retried_with_the_failed_clients_only():
    config = settings(dropout=0.6, min_clients=4, on_too_few="retry", max_retries=5)
    plans = {cid: Plan((0,)) for cid in range(5)}
    calls: list[dict[int, Plan]] = []
    outcome = collect_updates(
        config, 3, plans, STATE, fake_dispatch(calls), UpdateValidator(LAYOUT, config.reliability)
    )
    assert outcome.attempts >= 2 and 1 <= len(calls) <= outcome.attempts  # nobody is called when all drop
    accepted_ids = [u.client_id for u in outcome.accepted]
    assert accepted_ids == sorted(accepted_ids) and len(accepted_ids) >= 4
    for earlier, later in zip(calls, calls[1:], strict=False):  # a retry never re-asks a client that answered
        assert not set(later) & set(earlier)
    assert all(f["reason"] == "dropout" for f in outcome.failed)


def test_timeouts_count_as_failures_and_a_round_is_skipped_after_the_retries():
    config = settings(client_timeout_s=0.5, min_clients=2, on_too_few="retry", max_retries=2)
    plans = {cid: Plan((0,)) for cid in range(5)}
    calls: list[dict[int, Plan]] = []
    outcome = collect_updates(
        config, 1, plans, STATE, fake_dispatch(calls, seconds=2.0), UpdateValidator(LAYOUT, config.reliability)
    )
    assert outcome.accepted == [] and outcome.attempts == 3 and len(calls) == 3
    assert {f["reason"] for f in outcome.failed} == {"timeout"} and len(outcome.failed) == 15


def test_missing_replies_are_logged_as_no_reply():
    config = settings()
    plans = {cid: Plan((0,)) for cid in range(3)}

    def lossy(round_num, sent, state):  # noqa: ANN001, ANN202 - client 1 never answers
        return [ClientUpdate(c, p, {n: v.clone() for n, v in state.items()}, 5) for c, p in sent.items() if c != 1]

    outcome = collect_updates(config, 1, plans, STATE, lossy, UpdateValidator(LAYOUT, config.reliability))
    assert [u.client_id for u in outcome.accepted] == [0, 2]
    assert outcome.failed == [{"id": 1, "reason": "no reply", "attempt": 0}]


def test_30_percent_dropout_run_completes_and_logs_failures(fast_config, tmp_path):
    config = fast_config.model_copy(deep=True)
    config.federation.rounds = 4
    config.federation.clients_per_round = 4
    config.reliability.dropout = 0.3
    config.reliability.min_clients = 2
    config.reliability.on_too_few = "retry"
    config.output.save_adapter = False
    summary = ENGINES.get("local")().run(config, tmp_path / "run", show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [1, 2, 3, 4] and summary["final_accuracy"] is not None
    failed = [f for r in records for f in r["failed_clients"]]
    assert failed and all(f["reason"] == "dropout" for f in failed)
    assert summary["failed_clients"] == len(failed)
    for record in records:
        trained = {c["id"] for c in record["clients"]}
        dropped_last = {f["id"] for f in record["failed_clients"] if f["attempt"] == record["attempts"] - 1}
        assert not trained & dropped_last
        assert record["skipped"] == (len(trained) < 2)


def test_rounds_without_enough_clients_are_skipped_and_leave_the_model_unchanged(fast_config, tmp_path):
    config = fast_config.model_copy(deep=True)
    config.federation.rounds = 2
    config.reliability.client_timeout_s = 1e-9  # every client is too slow
    config.reliability.on_too_few = "skip"
    config.strategy.name = "gd"
    ENGINES.get("local")().run(config, tmp_path / "run", show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["skipped"] and r["attempts"] == 1 and not r["clients"] for r in records)
    assert all(len(r["failed_clients"]) == 3 for r in records)
    # no aggregation happened: the saved adapter is the initial one, so both evaluations agree exactly
    assert records[0]["accuracy"] == records[1]["accuracy"] and records[0]["loss"] == records[1]["loss"]
