"""The round loop shared by every engine: configure, dispatch, validate, aggregate, evaluate, record,
checkpoint.

Engines differ only in `dispatch`: how the round's plans reach clients and their updates come back
(a Python loop in-process, Flower messages otherwise). A client that does not answer is simply absent
from the returned list; everything else about failures -- simulated dropout, timeouts, too few updates,
retries, hostile updates -- is handled here, identically for every engine.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedhello.config import RunConfig
from fedhello.errors import FedHelloError
from fedhello.plan import ClientUpdate, Plan, state_bytes
from fedhello.reporting import RunWriter, plot_accuracy, summarize, write_partition_stats
from fedhello.server.checkpoint import (
    check_resumable,
    has_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    truncate_logs,
)
from fedhello.server.coordinator import Coordinator, round_record
from fedhello.server.federation import Federation
from fedhello.server.validation import Rejection, SampleCounts, UpdateValidator
from fedhello.training.trainer import load_state

Dispatch = Callable[[int, dict[int, Plan], dict[str, torch.Tensor]], list[ClientUpdate]]

_DROPOUT = 2  # random stream of simulated client failures (the coordinator uses 0 and 1)


def simulated_dropouts(config: RunConfig, round_num: int, attempt: int, client_ids: list[int]) -> set[int]:
    """Clients that fail to reply in this attempt of this round (`reliability.dropout`), drawn per
    (seed, round, attempt, client) so the draw does not depend on which other clients were sampled."""
    p = config.reliability.dropout
    if p <= 0:
        return set()
    draws = {
        cid: np.random.default_rng([config.seed, round_num, _DROPOUT, attempt, cid]).random() for cid in client_ids
    }
    return {cid for cid, draw in draws.items() if draw < p}


@dataclass
class RoundOutcome:
    """What came back in a round, over all its attempts."""

    accepted: list[ClientUpdate] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    sent: int = 0  # plans actually handed to the engine (simulated dropouts are never sent one)


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
        outcome.failed.extend({"id": cid, "reason": why, "attempt": attempt} for cid, why in sorted(failed.items()))
        outcome.accepted, outliers = validator.bound(wellformed, global_state)
        if len(outcome.accepted) >= settings.min_clients:
            break
        pending = {cid: plans[cid] for cid in sorted(failed)}  # hostile clients are not asked again
        if not pending:
            break
    outcome.rejected.extend({**r.to_json(), "attempt": arrived[r.client_id]} for r in outliers)
    # aggregation order must not depend on arrival order (floating-point sums are not associative)
    outcome.accepted.sort(key=lambda u: u.client_id)
    return outcome


def partition_sizes(federation: Federation) -> SampleCounts:
    """The server's own training-sample count of every client (its partition's size), for engines whose
    server holds the federation's partitioner: `UpdateValidator` then refuses any other claim."""
    sizes: dict[int, int] = {}

    def size(client_id: int) -> int:
        if client_id not in sizes:  # only sampled clients are asked (others are refused as unsolicited)
            sizes[client_id] = len(federation.client_data(client_id))
        return sizes[client_id]

    return size


def _resume(federation: Federation, coordinator: Coordinator, run_dir: Path) -> int:
    """Load the run folder's checkpoint into the coordinator, cut the logs back to it; the round to
    continue after (0 when the run was interrupted before its first checkpoint)."""
    if not has_checkpoint(run_dir):
        truncate_logs(run_dir, {})
        return 0
    checkpoint = load_checkpoint(run_dir)
    check_resumable(checkpoint, federation.config, federation.client_tiers)
    expected = set(coordinator.global_state)
    if set(checkpoint.global_state) != expected:
        raise FedHelloError(
            "option '--resume': the checkpoint's adapter tensors do not match this model "
            "(fix: resume with the model and LoRA settings of the run)"
        )
    coordinator.global_state = {k: v.to(coordinator.global_state[k].dtype) for k, v in checkpoint.global_state.items()}
    coordinator.allocator.load_state_dict(checkpoint.allocator_state)
    if checkpoint.aggregator_state is not None and hasattr(coordinator.aggregator, "load_state_dict"):
        coordinator.aggregator.load_state_dict(checkpoint.aggregator_state)
    truncate_logs(run_dir, checkpoint.log_sizes)
    restore_rng(checkpoint)
    return checkpoint.round


def _checkpoint(run_dir: Path, round_num: int, federation: Federation, coordinator: Coordinator) -> None:
    aggregator_state = getattr(coordinator.aggregator, "state_dict", None)
    save_checkpoint(
        run_dir,
        round_num,
        federation.config,
        coordinator.global_state,
        coordinator.allocator.state_dict(),
        federation.client_tiers,
        aggregator_state() if callable(aggregator_state) else None,
    )


def run_rounds(
    federation: Federation,
    coordinator: Coordinator,
    dispatch: Dispatch,
    run_dir: Path,
    show_progress: bool = True,
    resume: bool = False,
    sample_counts: SampleCounts | None = None,
) -> dict[str, Any]:
    """Run every configured round, write the run folder, return the summary.

    With `resume`, continue `run_dir` from its last checkpoint (see server/checkpoint.py); the result is
    bitwise the one of an uninterrupted run on the same hardware. `sample_counts` is the server's own
    count of each client's samples (`partition_sizes`) where the engine's server holds the partitions
    (local, flower-sim); without it clients' claims are only bounded (see server/validation.py).
    """
    config = federation.config
    start = _resume(federation, coordinator, run_dir) if resume else 0
    writer = RunWriter(run_dir, config)
    write_partition_stats(federation, run_dir)
    validator = UpdateValidator(federation.layout, config.reliability, coordinator.aggregator, sample_counts)
    rounds = config.federation.rounds
    every = config.checkpoint.every
    download_bytes = state_bytes(coordinator.global_state)
    records: list[dict[str, Any]] = writer.read_metrics() if start else []
    progress = Progress(
        TextColumn("[bold]round {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    with progress:
        bar = progress.add_task("", total=rounds, completed=start)
        for round_num in range(start + 1, rounds + 1):
            started = time.perf_counter()
            plans, importance = coordinator.configure(round_num)
            if importance is not None:
                writer.log_importance(importance)
            outcome = collect_updates(config, round_num, plans, coordinator.global_state, dispatch, validator)
            skipped = len(outcome.accepted) < config.reliability.min_clients
            if not skipped:
                coordinator.aggregate(outcome.accepted, round_num)
            evaluate = round_num % config.federation.eval_every == 0 or round_num == rounds
            evaluation = coordinator.evaluate(full=round_num == rounds) if evaluate else None
            record = round_record(
                round_num, federation, outcome.accepted, download_bytes, time.perf_counter() - started, evaluation
            )
            record["importance_refresh"] = importance is not None
            record["bytes_down"] = download_bytes * outcome.sent  # what went out, not who was sampled
            record["attempts"] = outcome.attempts
            record["skipped"] = skipped
            record["failed_clients"] = outcome.failed
            record["rejected"] = outcome.rejected
            writer.log_round(record)
            records.append(record)
            if every and (round_num % every == 0 or round_num == rounds):
                _checkpoint(run_dir, round_num, federation, coordinator)
            if evaluation:
                progress.update(bar, description=f"acc {evaluation['accuracy']:.3f}")
            progress.advance(bar)

    summary = summarize(records)
    summary["run_dir"] = str(run_dir)
    summary["resumed_from"] = start if resume else None
    summary["rejected_updates"] = sum(len(r.get("rejected", [])) for r in records)
    summary["failed_clients"] = sum(len(r.get("failed_clients", [])) for r in records)
    summary["skipped_rounds"] = sum(1 for r in records if r.get("skipped"))
    writer.write_summary(summary)
    if config.output.save_adapter:
        load_state(federation.model, coordinator.global_state)
        federation.model.save_pretrained(str(run_dir / "adapter"))
    if config.output.plot:
        plot_accuracy(records, run_dir / "accuracy.png", title=f"{config.name} ({config.strategy.name})")
    return summary
