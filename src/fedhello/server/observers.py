"""The observers of a run: which ones a config asks for, and the two the server provides itself (the
progress bar and accuracy.png). The run folder writer is `fedhello.rundir.RunWriter`; loggers are in
`fedhello.loggers`; the HTML report is `fedhello.reporting.ReportObserver`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fedhello import figures
from fedhello.config import RunConfig
from fedhello.events import Observers, RunObserver, RunStart
from fedhello.loggers import LOGGERS
from fedhello.rundir import ACCURACY_PLOT, RunWriter
from fedhello.tasks import TASKS


class ProgressBar(RunObserver):
    """A rich progress bar over the run's rounds, showing the latest value of the task's metric."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.bar: Any = None
        self.metric = "acc"

    def on_run_start(self, start: RunStart) -> None:
        self.metric = headline_metric(start.config)
        self.metric = "acc" if self.metric == "accuracy" else self.metric
        self.progress = Progress(
            TextColumn("[bold]round {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        self.progress.start()
        self.bar = self.progress.add_task("", total=start.config.federation.rounds, completed=start.resumed_from or 0)

    def on_round_end(self, record: dict[str, Any]) -> None:
        if self.progress is None:
            return
        if record.get("accuracy") is not None:
            spent = record.get("privacy", {}).get("epsilon")
            privacy = f", eps {spent:.3g}" if spent is not None else ""
            self.progress.update(self.bar, description=f"{self.metric} {record['accuracy']:.3f}{privacy}")
        self.progress.advance(self.bar)

    def on_run_end(self, summary: dict[str, Any]) -> None:
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class AccuracyPlot(RunObserver):
    """Draws RUN_DIR/accuracy.png (the task's metric per round: accuracy, ROUGE-L) when the run ends
    (`output.plot`)."""

    def __init__(self) -> None:
        self.start: RunStart | None = None
        self.records: list[dict[str, Any]] = []

    def on_run_start(self, start: RunStart) -> None:
        self.start = start
        self.records = list(start.history)

    def on_round_end(self, record: dict[str, Any]) -> None:
        self.records.append(record)

    def on_run_end(self, summary: dict[str, Any]) -> None:
        assert self.start is not None, "on_run_start comes first"
        config = self.start.config
        points = [(r["round"], r["accuracy"]) for r in self.records if r.get("accuracy") is not None]
        line = ([x for x, _ in points], [y for _, y in points])
        figure = figures.accuracy_lines(
            {"": line}, title=f"{config.name} ({config.strategy.name})", metric=headline_metric(config)
        )
        figures.save_png(figure, self.start.run_dir / ACCURACY_PLOT)


def headline_metric(config: RunConfig) -> str:
    """The name of the run's headline metric (`Task.metric`): accuracy, or rouge_l for a causal LM."""
    return TASKS.get(config.task).metric


def run_observers(config: RunConfig, show_progress: bool = False, extra: Sequence[RunObserver] = ()) -> Observers:
    """The observers of a run, in the order they hear each event: the run folder writer, accuracy.png
    (`output.plot`), the `output.loggers`, the progress bar, then `extra` (the caller's own). Loggers are
    built here, so a missing logger package fails before the model is loaded."""
    observers: list[RunObserver] = [RunWriter()]
    if config.output.plot:
        observers.append(AccuracyPlot())
    observers += [LOGGERS.get(name)() for name in config.output.loggers]
    if show_progress:
        observers.append(ProgressBar())
    return Observers([*observers, *extra])
