"""Round events and their observers: how loggers, the run folder writer, the progress bar and the report
follow a run (in the manner of `transformers`' `TrainerCallback`).

The round loop (`fedhello.server.loop.run_rounds`) fires, in this order:

  on_run_start(start)              once, before the first round it runs (`start.resumed_from` when resuming)
  on_importance(record)            when layer importance (FIM) was refreshed before a round's allocation
  on_evaluate(round_num, metrics)  after the global adapter was evaluated (not every round: `eval_every`)
  on_round_end(record)             after every round, with the round's record (one line of metrics.jsonl)
  on_run_end(summary)              once, after the last round (the content of summary.json)
  close()                          always last, also when the run failed

Records are plain dicts: a metric a round adds to its record reaches every observer. A user's observer is
a subclass of `RunObserver` that overrides the hooks it needs; pass it to `Engine.run(..., observers=[...])`
or register it in `fedhello.loggers.LOGGERS` to select it with `output.loggers`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedhello.config import RunConfig


@dataclass(frozen=True)
class RunStart:
    """What an observer learns when a run starts."""

    config: RunConfig
    run_dir: Path
    resumed_from: int | None = None  # the checkpoint's round when resuming, None for a new run
    history: list[dict[str, Any]] = field(default_factory=list)  # records of the rounds before it (resume)
    partition: dict[str, Any] | None = None  # every client's data and tier (partition.json), when computed


class RunObserver:
    """Base of every observer: all hooks do nothing; override the ones you need."""

    def on_run_start(self, start: RunStart) -> None:
        """The run is about to run its first (or, resumed, its next) round."""

    def on_importance(self, record: dict[str, Any]) -> None:
        """Layer importance was refreshed: round, scores, levels, probabilities (importance.jsonl)."""

    def on_evaluate(self, round_num: int, metrics: dict[str, float]) -> None:
        """The global adapter was evaluated after round `round_num` (accuracy, loss, task metrics)."""

    def on_round_end(self, record: dict[str, Any]) -> None:
        """Round `record["round"]` is complete; `record` is its line of metrics.jsonl."""

    def on_run_end(self, summary: dict[str, Any]) -> None:
        """Every round ran; `summary` is summary.json's content."""

    def close(self) -> None:
        """Release files or connections; called once at the end, also after a failure."""


class Observers(RunObserver):
    """Forwards every event to a list of observers, in their order."""

    def __init__(self, observers: Iterable[RunObserver] = ()) -> None:
        self.observers = list(observers)

    def on_run_start(self, start: RunStart) -> None:
        for observer in self.observers:
            observer.on_run_start(start)

    def on_importance(self, record: dict[str, Any]) -> None:
        for observer in self.observers:
            observer.on_importance(record)

    def on_evaluate(self, round_num: int, metrics: dict[str, float]) -> None:
        for observer in self.observers:
            observer.on_evaluate(round_num, metrics)

    def on_round_end(self, record: dict[str, Any]) -> None:
        for observer in self.observers:
            observer.on_round_end(record)

    def on_run_end(self, summary: dict[str, Any]) -> None:
        for observer in self.observers:
            observer.on_run_end(summary)

    def close(self) -> None:
        """Close every observer, even when one of them fails (the first failure is raised afterwards)."""
        failure: BaseException | None = None
        for observer in self.observers:
            try:
                observer.close()
            except Exception as err:  # noqa: BLE001 - close the others first
                failure = failure or err
        if failure is not None:
            raise failure
