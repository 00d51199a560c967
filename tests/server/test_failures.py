"""Client failures: simulated dropout and timeouts, too few updates (retry or skip), all logged per round."""

from __future__ import annotations

import json

import torch

from fedhello.config import RunConfig
from fedhello.engines import ENGINES
from fedhello.plan import ClientUpdate, Plan
from fedhello.server.loop import collect_updates, lost_every_round, simulated_dropouts
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


def run_with(config: RunConfig, run_dir, wrap):  # noqa: ANN001, ANN201
    """The local engine's round loop with `wrap(dispatch)` between the server and the clients; returns
    the initial and the final global state."""
    from fedhello.seeding import client_seed
    from fedhello.server import Coordinator, build_federation
    from fedhello.server.loop import partition_sizes, run_rounds
    from fedhello.server.observers import run_observers
    from fedhello.training import LocalTrainer

    federation = build_federation(config)
    coordinator = Coordinator(federation)
    initial = {k: v.clone() for k, v in coordinator.global_state.items()}
    trainer = LocalTrainer(federation.model, federation.task, federation.layout, config.train)

    def dispatch(round_num, plans, state):  # noqa: ANN001, ANN202
        return [
            trainer.train(cid, plan, state, federation.client_data(cid), client_seed(config.seed, round_num, cid))
            for cid, plan in plans.items()
        ]

    observers = run_observers(config, show_progress=False)
    run_rounds(federation, coordinator, wrap(dispatch), run_dir, observers, sample_counts=partition_sizes(federation))
    return initial, coordinator.global_state


def test_rounds_with_too_few_updates_are_skipped_and_leave_the_model_unchanged(fast_config, tmp_path):
    config = fast_config.model_copy(deep=True)
    config.federation.rounds = 2
    config.reliability.min_clients = 3
    config.reliability.on_too_few = "skip"
    config.strategy.name = "gd"

    def last_client_silent(dispatch):  # noqa: ANN001, ANN202 - 2 of the 3 sampled clients answer
        return lambda round_num, plans, state: dispatch(round_num, plans, state)[:-1]

    initial, final = run_with(config, tmp_path / "run", last_client_silent)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    # updates did arrive and were valid, only too few of them
    assert all(r["skipped"] and r["attempts"] == 1 and len(r["clients"]) == 2 and not r["rejected"] for r in records)
    assert all([f["reason"] for f in r["failed_clients"]] == ["no reply"] for r in records)
    assert all(torch.equal(final[k], initial[k]) for k in initial), "a skipped round must not aggregate"
    assert records[0]["accuracy"] == records[1]["accuracy"] and records[0]["loss"] == records[1]["loss"]


def test_bytes_down_counts_only_the_plans_actually_sent(fast_config, tmp_path):
    from fedhello.plan import state_bytes

    config = fast_config.model_copy(deep=True)
    config.federation.rounds = 3
    config.reliability.dropout = 0.5
    config.reliability.on_too_few = "retry"
    config.reliability.min_clients = 2
    config.output.save_adapter = False
    received: list[int] = []

    def count(dispatch):  # noqa: ANN001, ANN202
        def counted(round_num, plans, state):  # noqa: ANN001, ANN202
            while len(received) < round_num:
                received.append(0)
            received[round_num - 1] += len(plans)
            return dispatch(round_num, plans, state)

        return counted

    initial, _ = run_with(config, tmp_path / "run", count)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    dropouts = sum(f["reason"] == "dropout" for r in records for f in r["failed_clients"])
    assert dropouts, "the seed must drop some clients, or this test checks nothing"
    assert [r["bytes_down"] for r in records] == [state_bytes(initial) * n for n in received]


def outlier_dispatch(first_attempt: set[int], outlier: int, calls: list[set[int]]):  # noqa: ANN201
    """Clients in `first_attempt` answer the first send, the others only the re-send; `outlier` sends a
    50x larger change than the honest clients (whose changes differ slightly)."""

    def dispatch(round_num, plans, state):  # noqa: ANN001, ANN202
        calls.append(set(plans))
        answering = [cid for cid in plans if len(calls) > 1 or cid in first_attempt]
        return [
            ClientUpdate(
                cid, plans[cid], {n: v + (50.0 if cid == outlier else 1.0 + cid / 100) for n, v in state.items()}, 5
            )
            for cid in answering
        ]

    return dispatch


def test_the_norm_bound_judges_an_update_against_the_whole_round_not_its_attempt():
    config = settings(norm_bound=5.0, min_clients=5, on_too_few="retry", max_retries=1)
    plans = {cid: Plan((0,)) for cid in range(5)}
    # an outlier that arrives on the retry, with only one other update in its attempt
    calls: list[set[int]] = []
    validator = UpdateValidator(LAYOUT, config.reliability)
    outcome = collect_updates(config, 1, plans, STATE, outlier_dispatch({0, 1, 2}, 4, calls), validator)
    assert calls == [{0, 1, 2, 3, 4}, {3, 4}]
    assert [u.client_id for u in outcome.accepted] == [0, 1, 2, 3]
    assert [(r["id"], r["attempt"]) for r in outcome.rejected] == [(4, 1)] and "norm bound" in outcome.rejected[0][
        "reason"
    ]
    # an outlier in a first attempt too small for a median is judged once the round has enough updates
    calls = []
    outcome = collect_updates(config, 1, plans, STATE, outlier_dispatch({0, 4}, 4, calls), validator)
    assert calls == [{0, 1, 2, 3, 4}, {1, 2, 3}]
    assert [u.client_id for u in outcome.accepted] == [0, 1, 2, 3]
    assert [(r["id"], r["attempt"]) for r in outcome.rejected] == [(4, 0)] and "norm bound" in outcome.rejected[0][
        "reason"
    ]


class ExplainingDispatch:
    """A dispatch whose client 1 never answers and says why (`server.loop.ExplainsLosses`)."""

    def __init__(self) -> None:
        self.calls: list[dict[int, Plan]] = []
        self.inner = fake_dispatch(self.calls)

    def __call__(self, round_num, plans, state):  # noqa: ANN001, ANN204
        return [u for u in self.inner(round_num, plans, state) if u.client_id != 1]

    def lost_reasons(self) -> dict[int, str]:
        return {1: "error reply: FedHelloError: labels ['weather'] are not among the run's classes"}


def test_a_dispatch_that_explains_a_loss_has_its_reason_recorded():
    config = settings()
    plans = {cid: Plan((0,)) for cid in range(3)}
    validator = UpdateValidator(LAYOUT, config.reliability)
    outcome = collect_updates(config, 1, plans, STATE, ExplainingDispatch(), validator)
    assert [u.client_id for u in outcome.accepted] == [0, 2]
    (failure,) = outcome.failed
    assert failure["id"] == 1 and failure["reason"] == "no reply" and "'weather'" in failure["detail"]
    plain = collect_updates(config, 1, plans, STATE, fake_dispatch([]), UpdateValidator(LAYOUT, config.reliability))
    assert plain.failed == [], "a dispatch without reasons adds no detail field to anything"


def test_clients_lost_in_every_round_they_were_sampled_are_found():
    def record(clients, failed, rejected=()):  # noqa: ANN001, ANN202
        return {
            "clients": [{"id": c} for c in clients],
            "failed_clients": [{"id": c, "reason": why, **({"detail": d} if d else {})} for c, why, d in failed],
            "rejected": [{"id": c, "reason": "norm"} for c in rejected],
        }

    records = [
        record([0], [(2, "no reply", "bad labels"), (3, "no reply", None), (5, "dropout", None)]),
        record([0, 3], [(2, "no reply", "still bad labels"), (4, "no reply", None)], rejected=[6]),
        record([0], [(2, "no reply", "bad labels"), (6, "no reply", None)]),  # 1 and 4 not sampled
    ]
    # 2: lost every time (last reason); 3 and 6 answered once (6 was refused, but answered); 4: lost the one
    # round it was sampled in; 5: a simulated dropout is the experiment's doing
    assert lost_every_round(records) == {2: "bad labels", 4: "no reply"}
    assert lost_every_round([record([0, 1], [])]) == {}
