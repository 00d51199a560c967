"""The round loop shared by every engine: configure, dispatch, validate, aggregate, evaluate, record,
checkpoint -- and tell the observers (`fedhello.events`) what happened.

Engines differ only in `dispatch`: how the round's plans reach clients and their updates come back
(a Python loop in-process, Flower messages otherwise). A client that does not answer is simply absent
from the returned list; everything else about failures -- simulated dropout, timeouts, too few updates,
retries, hostile updates -- is handled here, identically for every engine.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from fedhello.aggregation.base import LayerSums
from fedhello.config import RunConfig
from fedhello.events import Observers, RunStart
from fedhello.models.adapter import load_state
from fedhello.plan import ClientUpdate, Plan, state_bytes
from fedhello.rundir import ADAPTER_DIR, ADAPTER_LABELS_FILE, read_metrics, summarize, write_atomic
from fedhello.seeding import DROPOUT, round_rng
from fedhello.server.coordinator import Coordinator
from fedhello.server.federation import Federation
from fedhello.server.local_test import local_test_record
from fedhello.server.observers import run_observers
from fedhello.server.partition_stats import partition_stats
from fedhello.server.resume import resume_run, save_round
from fedhello.server.validation import Rejection, SampleCounts, UpdateValidator
from fedhello.training.attack import hostile_clients

Dispatch = Callable[[int, dict[int, Plan], dict[str, torch.Tensor]], list[ClientUpdate]]


@runtime_checkable
class ExplainsLosses(Protocol):
    """A dispatch that can say why a client sent nothing (its node's error, the node gone, a deadline): the
    reasons land in metrics.jsonl (`failed_clients[].detail`) instead of a bare "no reply"."""

    def lost_reasons(self) -> dict[int, str]:
        """Why each client of the last call sent nothing, by client id (clients it cannot explain are absent)."""
        ...


@runtime_checkable
class SecureDispatch(Protocol):
    """A dispatch that runs secure aggregation (`secure.enabled`): the server learns each tensor's sum over the
    clients that trained it (`LayerSums`), never an update. The updates it returns carry metrics and sample counts,
    no tensors."""

    def secure_round(
        self, round_num: int, plans: dict[int, Plan], global_state: dict[str, torch.Tensor]
    ) -> tuple[list[ClientUpdate], LayerSums]:
        """Train the plans' clients and return their updates' metadata and the round's per-tensor sums."""
        ...


# failure reasons that are the experiment's own doing, not a client's problem (`reliability.dropout`)
SIMULATED_FAILURES = frozenset({"dropout"})


def lost_every_round(records: list[dict[str, Any]]) -> dict[int, str]:
    """Clients lost in every round they were sampled in (failed, never accepted or even rejected, and not a
    simulated dropout), with the last reason recorded for each: a node that can never train, e.g. one whose
    data the run refuses. A client lost in some rounds and heard from in others is not among them."""
    lost: dict[int, str] = {}
    heard: set[int] = set()
    for record in records:
        answered = {c["id"] for c in record.get("clients", [])} | {r.get("id") for r in record.get("rejected", [])}
        heard |= answered
        for failure in record.get("failed_clients", []):
            if failure["id"] not in answered and failure.get("reason") not in SIMULATED_FAILURES:
                lost[failure["id"]] = failure.get("detail") or failure.get("reason", "lost")
    return {cid: why for cid, why in sorted(lost.items()) if cid not in heard}


def simulated_dropouts(config: RunConfig, round_num: int, attempt: int, client_ids: list[int]) -> set[int]:
    """Clients that fail to reply in this attempt of this round (`reliability.dropout`), drawn per
    (seed, round, attempt, client) so the draw does not depend on which other clients were sampled."""
    p = config.reliability.dropout
    if p <= 0:
        return set()
    draws = {cid: round_rng(config.seed, round_num, DROPOUT, attempt, cid).random() for cid in client_ids}
    return {cid for cid, draw in draws.items() if draw < p}


@dataclass
class RoundOutcome:
    """What came back in a round, over all its attempts."""

    accepted: list[ClientUpdate] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    sent: int = 0  # plans actually handed to the engine (simulated dropouts are never sent one)
    warnings: list[str] = field(default_factory=list)  # e.g. a median rule that had too few updates to judge
    sums: LayerSums | None = None  # secure aggregation: what the server learnt instead of the updates


def failure_records(failed: dict[int, str], dispatch: object, attempt: int) -> list[dict[str, Any]]:
    """metrics.jsonl's `failed_clients` entries of one attempt: each lost client's reason, with the dispatch's
    explanation (`ExplainsLosses`) as `detail` where it has one."""
    details = dispatch.lost_reasons() if isinstance(dispatch, ExplainsLosses) else {}
    return [
        {"id": cid, "reason": why, **({"detail": details[cid]} if cid in details else {}), "attempt": attempt}
        for cid, why in sorted(failed.items())
    ]


def collect_secure(
    config: RunConfig,
    round_num: int,
    plans: dict[int, Plan],
    global_state: dict[str, torch.Tensor],
    dispatch: SecureDispatch,
) -> RoundOutcome:
    """One secure round (no retries: a retry's sums could not be told apart from the first attempt's): simulated
    dropouts are never sent their plan, the others' masked uploads are summed by the protocol, and a client that
    dropped out in it is lost. The server cannot validate what it cannot see: the config refuses the per-update
    norm rule with secure aggregation, and the clip range of the quantisation bounds every entry."""
    outcome = RoundOutcome(attempts=1)
    dropped = simulated_dropouts(config, round_num, 0, sorted(plans))
    sent = {cid: plan for cid, plan in plans.items() if cid not in dropped}
    outcome.sent = len(sent)
    updates, outcome.sums = dispatch.secure_round(round_num, sent, global_state) if sent else ([], LayerSums({}, {}))
    failed = {cid: "dropout" for cid in dropped}
    replied = {u.client_id for u in updates}
    failed.update({cid: "no reply" for cid in sent if cid not in replied})
    outcome.failed = failure_records(failed, dispatch, attempt=0)
    outcome.accepted = sorted((u for u in updates if u.client_id in sent), key=lambda u: u.client_id)
    return outcome


def collect_updates(
    config: RunConfig,
    round_num: int,
    plans: dict[int, Plan],
    global_state: dict[str, torch.Tensor],
    dispatch: Dispatch,
    validator: UpdateValidator,
) -> RoundOutcome:
    """Send the plans, drop late or missing replies, validate the rest; with `on_too_few: retry`, re-send
    to the clients that failed until `min_clients` updates are accepted or the retries run out.

    Each reply is checked on its own as it arrives; the round-level rules (the median-relative norm and
    sample-count bounds) judge all the round's well-formed updates together after every attempt, so an
    update that arrives on a retry is held against the whole round, not against the one or two other
    replies of its attempt.
    """
    settings = config.reliability
    outcome = RoundOutcome()
    pending = dict(plans)
    tries = 1 + (settings.max_retries if settings.on_too_few == "retry" else 0)
    wellformed: list[ClientUpdate] = []
    arrived: dict[int, int] = {}  # client -> the attempt its well-formed update came in
    seen: set[int] = set()  # clients heard from this round (a second update is a duplicate)
    outliers: list[Rejection] = []
    for attempt in range(tries):
        outcome.attempts = attempt + 1
        dropped = simulated_dropouts(config, round_num, attempt, sorted(pending))
        sent = {cid: plan for cid, plan in pending.items() if cid not in dropped}
        outcome.sent += len(sent)
        updates = dispatch(round_num, sent, global_state) if sent else []
        failed = {cid: "dropout" for cid in dropped}
        if settings.client_timeout_s is not None:
            for update in updates:
                if update.client_id in sent and update.metrics.get("seconds", 0.0) > settings.client_timeout_s:
                    failed[update.client_id] = "timeout"
            updates = [u for u in updates if failed.get(u.client_id) != "timeout"]
        replied = {u.client_id for u in updates}
        failed.update({cid: "no reply" for cid in sent if cid not in replied and cid not in failed})
        good, malformed = validator.screen(sent, updates, global_state, seen)
        wellformed.extend(good)
        arrived.update({u.client_id: attempt for u in good})
        outcome.rejected.extend({**r.to_json(), "attempt": attempt} for r in malformed)
        outcome.failed.extend(failure_records(failed, dispatch, attempt))
        outcome.accepted, outliers = validator.bound(wellformed, global_state)
        if len(outcome.accepted) >= settings.min_clients:
            break
        pending = {cid: plans[cid] for cid in sorted(failed)}  # hostile clients are not asked again
        if not pending:
            break
    outcome.rejected.extend({**r.to_json(), "attempt": arrived[r.client_id]} for r in outliers)
    outcome.warnings = validator.unbounded(wellformed, global_state)
    for note in outcome.warnings:  # on the console too: nothing bounded these updates
        warnings.warn(f"round {round_num}: {note}", stacklevel=2)
    # aggregation order must not depend on arrival order (floating-point sums are not associative)
    outcome.accepted.sort(key=lambda u: u.client_id)
    return outcome


def round_record(
    round_num: int,
    federation: Federation,
    outcome: RoundOutcome,
    download_bytes: int,
    wall_seconds: float,
    evaluation: dict[str, float] | None,
    importance_refresh: bool,
    skipped: bool,
) -> dict[str, Any]:
    """One line of metrics.jsonl: global metrics, then what every client trained and sent. Task metrics
    beyond accuracy and loss (e.g. ROUGE-L) follow the loss. A simulated hostile client (`attack:`) is marked
    `"hostile": true` -- by the server, from the config, so the mark never depends on what a node reports."""
    updates = outcome.accepted
    hostile = hostile_clients(federation.config)
    clients = [
        {
            "id": u.client_id,
            "tier": federation.client_tiers[u.client_id],
            "layers": list(u.plan.layers),
            **({"recompute": u.plan.recompute} if u.plan.recompute else {}),
            **({"hostile": True} if u.client_id in hostile else {}),
            "num_samples": u.num_samples,
            **u.metrics,
        }
        for u in updates
    ]
    task_metrics = {k: v for k, v in (evaluation or {}).items() if k not in ("accuracy", "loss")}
    local = local_test_record(updates)  # personalised evaluation (`federation.local_test`), on evaluation rounds
    return {
        "round": round_num,
        "accuracy": evaluation["accuracy"] if evaluation else None,
        "loss": evaluation["loss"] if evaluation else None,
        **task_metrics,
        **({"local_test": local} if local else {}),
        "train_loss": float(np.mean([u.metrics.get("train_loss", np.nan) for u in updates])) if updates else None,
        "wall_seconds": wall_seconds,
        "train_seconds": sum(u.metrics.get("seconds", 0.0) for u in updates),
        "bytes_up": sum(u.num_bytes for u in updates),
        "bytes_down": download_bytes * outcome.sent,  # what went out, not who was sampled
        "clients": clients,
        "importance_refresh": importance_refresh,
        "attempts": outcome.attempts,
        "skipped": skipped,
        "failed_clients": outcome.failed,
        "rejected": outcome.rejected,
        "warnings": outcome.warnings,
    }


def partition_sizes(federation: Federation) -> SampleCounts:
    """The server's own training-sample count of every client (its partition's size), for engines whose
    server holds the federation's partitioner: `UpdateValidator` then refuses any other claim."""
    sizes: dict[int, int] = {}

    def size(client_id: int) -> int:
        if client_id not in sizes:  # only sampled clients are asked (others are refused as unsolicited)
            sizes[client_id] = len(federation.client_data(client_id))
        return sizes[client_id]

    return size


def _partition(federation: Federation) -> dict[str, Any] | None:
    if not federation.holds_client_data:  # the nodes' data never reach the server
        return None
    try:
        return partition_stats(federation)
    except Exception as err:  # noqa: BLE001 - a report input must never stop a training run
        warnings.warn(f"partition.json not written: {err}", stacklevel=2)
        return None


def run_rounds(
    federation: Federation,
    coordinator: Coordinator,
    dispatch: Dispatch,
    run_dir: Path,
    observers: Observers | None = None,
    resume: bool = False,
    sample_counts: SampleCounts | None = None,
) -> dict[str, Any]:
    """Run every configured round, telling `observers` what happens, and return the summary. `observers`
    should include the run folder writer; by default they are the config's (`run_observers(config)`).

    With `resume`, continue `run_dir` from its last checkpoint (see server/resume.py); the result is
    bitwise the one of an uninterrupted run on the same hardware. `sample_counts` is the server's own
    count of each client's samples (`partition_sizes`) where the engine's server holds the partitions
    (local, flower-sim); without it clients' claims are only bounded (see server/validation.py).
    """
    config = federation.config
    observers = observers if observers is not None else run_observers(config)
    start = resume_run(federation, coordinator, run_dir) if resume else 0
    history = read_metrics(run_dir) if start else []
    validator = UpdateValidator(
        federation.layout,
        config.reliability,
        coordinator.aggregator,
        sample_counts,
        pruned_ranks=config.strategy.sends_lower_ranks,  # self-pruned clients send rank-k pairs
    )
    rounds = config.federation.rounds
    every = config.checkpoint.every
    download_bytes = state_bytes(coordinator.global_state)
    records = list(history)
    try:
        observers.on_run_start(RunStart(config, run_dir, start if resume else None, history, _partition(federation)))
        for round_num in range(start + 1, rounds + 1):
            started = time.perf_counter()
            plans, importance = coordinator.configure(round_num)
            if importance is not None:
                observers.on_importance(importance)
            if isinstance(dispatch, SecureDispatch):
                outcome = collect_secure(config, round_num, plans, coordinator.global_state, dispatch)
            else:
                outcome = collect_updates(config, round_num, plans, coordinator.global_state, dispatch, validator)
            skipped = len(outcome.accepted) < config.reliability.min_clients
            notes: list[str] = []
            if not skipped and outcome.sums is not None:
                notes = coordinator.aggregate_sums(outcome.sums, outcome.accepted, round_num)
            elif not skipped:
                notes = coordinator.aggregate(outcome.accepted, round_num)
            for note in notes:  # what the aggregator could not do as configured, e.g. Krum on a small layer
                outcome.warnings.append(note)
                warnings.warn(f"round {round_num}: {note}", stacklevel=2)
            # e.g. a spent privacy budget: this round is then the last (after the configured last one, nothing stops)
            stop = coordinator.aggregator.stop_reason() if round_num < rounds else None
            last = round_num == rounds or stop is not None
            evaluation = None
            benchmarks = coordinator.benchmarks_due(round_num)  # a round lm-eval scores is an evaluated round
            if benchmarks or round_num % config.federation.eval_every == 0 or last:
                evaluation = coordinator.evaluate(full=last, benchmarks=benchmarks)
                observers.on_evaluate(round_num, evaluation)
            seconds = time.perf_counter() - started
            record = round_record(
                round_num, federation, outcome, download_bytes, seconds, evaluation, importance is not None, skipped
            )
            record.update(coordinator.aggregator.record() if not skipped else {})
            if stop is not None:
                record["stopped"] = stop
            records.append(record)
            observers.on_round_end(record)
            if every and (round_num % every == 0 or last):
                save_round(run_dir, round_num, federation, coordinator)
            if stop is not None:
                warnings.warn(f"stopping after round {round_num}: {stop}", stacklevel=2)
                break
        summary = summarize(records, run_dir, start if resume else None, federation.task.metric)
        if config.output.save_adapter:
            load_state(federation.model, coordinator.global_state)
            federation.model.save_pretrained(str(run_dir / ADAPTER_DIR))
            labels = {"label_names": list(federation.label_names)}  # for `fedhello export`'s config.json
            write_atomic(run_dir / ADAPTER_DIR / ADAPTER_LABELS_FILE, json.dumps(labels))
        observers.on_run_end(summary)
    finally:
        observers.close()
    return summary
