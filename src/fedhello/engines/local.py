"""The in-process engine: one model, clients trained one after another in this process.

Memory does not grow with the number of registered clients: a client is a partition index and a tier,
and its data is an index selection loaded when it is sampled.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedhello.config import RunConfig
from fedhello.engines.base import ENGINES, Engine
from fedhello.plan import state_bytes
from fedhello.reporting import RunWriter, plot_accuracy, summarize
from fedhello.server import Coordinator, build_federation, client_seed
from fedhello.server.coordinator import round_record
from fedhello.training import LocalTrainer, load_state


@ENGINES.register("local")
class LocalEngine(Engine):
    def run(self, config: RunConfig, run_dir: Path, show_progress: bool = True) -> dict[str, Any]:
        federation = build_federation(config)
        coordinator = Coordinator(federation)
        trainer = LocalTrainer(federation.model, federation.task, federation.layout, config.train)
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
                updates = [
                    trainer.train(
                        cid,
                        plan,
                        coordinator.global_state,
                        federation.client_data(cid),
                        client_seed(config.seed, round_num, cid),
                    )
                    for cid, plan in plans.items()
                ]
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
