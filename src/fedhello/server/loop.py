"""The round loop shared by every engine: configure, dispatch, aggregate, evaluate, record.

Engines differ only in `dispatch`: how the round's plans reach clients and their updates come back
(a Python loop in-process, Flower messages otherwise).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedhello.plan import ClientUpdate, Plan, state_bytes
from fedhello.reporting import RunWriter, plot_accuracy, summarize
from fedhello.server.coordinator import Coordinator, round_record
from fedhello.server.federation import Federation
from fedhello.training.trainer import load_state

Dispatch = Callable[[int, dict[int, Plan], dict[str, torch.Tensor]], list[ClientUpdate]]


def run_rounds(
    federation: Federation,
    coordinator: Coordinator,
    dispatch: Dispatch,
    run_dir: Path,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run every configured round, write the run folder, return the summary."""
    config = federation.config
    writer = RunWriter(run_dir, config)
    rounds = config.federation.rounds
    download_bytes = state_bytes(coordinator.global_state)
    records: list[dict[str, Any]] = []
    progress = Progress(
        TextColumn("[bold]round {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
    )
    with progress:
        bar = progress.add_task("", total=rounds)
        for round_num in range(1, rounds + 1):
            started = time.perf_counter()
            plans, importance = coordinator.configure(round_num)
            if importance is not None:
                writer.log_importance(importance)
            updates = dispatch(round_num, plans, coordinator.global_state)
            coordinator.aggregate(updates)
            evaluate = round_num % config.federation.eval_every == 0 or round_num == rounds
            evaluation = coordinator.evaluate() if evaluate else None
            record = round_record(
                round_num, federation, updates, download_bytes, time.perf_counter() - started, evaluation
            )
            record["importance_refresh"] = importance is not None
            writer.log_round(record)
            records.append(record)
            if evaluation:
                progress.update(bar, description=f"acc {evaluation['accuracy']:.3f}")
            progress.advance(bar)

    summary = summarize(records)
    summary["run_dir"] = str(run_dir)
    writer.write_summary(summary)
    if config.output.save_adapter:
        load_state(federation.model, coordinator.global_state)
        federation.model.save_pretrained(str(run_dir / "adapter"))
    if config.output.plot:
        plot_accuracy(records, run_dir / "accuracy.png", title=f"{config.name} ({config.strategy.name})")
    return summary
