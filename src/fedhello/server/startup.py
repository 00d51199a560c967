"""How a server starts, in one place for every engine: first what can fail without a model (the observers -- a
logger whose package is missing -- and the lm-eval settings), then the federation (data, model, budgets) and the
coordinator over it. An engine that starts its server elsewhere (flower-deploy's ServerApp runs in the SuperLink's
process) calls `check_server` first, so those errors come before any process starts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedhello.config import RunConfig
from fedhello.events import Observers, RunObserver
from fedhello.plan import Plan
from fedhello.server.coordinator import Coordinator
from fedhello.server.federation import Federation, build_federation
from fedhello.server.loop import Dispatch, run_rounds
from fedhello.server.observers import run_observers
from fedhello.server.validation import SampleCounts
from fedhello.tasks.lm_eval_scorer import LMEvalScorer, lm_eval_scorer


@dataclass
class Server:
    """A started server: who follows the run, the federation and its coordinator."""

    observers: Observers
    federation: Federation
    coordinator: Coordinator

    def uploads(self, plan: Plan) -> dict[str, tuple[int, ...]]:
        """The shape of every tensor a client with `plan` uploads this round (what secure aggregation masks)."""
        coordinator = self.coordinator
        return coordinator.aggregator.expected_shapes(plan, coordinator.global_state, self.federation.layout)

    def run(
        self, dispatch: Dispatch, run_dir: Path, resume: bool = False, sample_counts: SampleCounts | None = None
    ) -> dict[str, Any]:
        """Every round of the run over `dispatch` (`fedhello.server.loop.run_rounds`); the summary."""
        return run_rounds(self.federation, self.coordinator, dispatch, run_dir, self.observers, resume, sample_counts)


def check_server(
    config: RunConfig, show_progress: bool = False, observers: Sequence[RunObserver] = ()
) -> tuple[Observers, LMEvalScorer | None]:
    """The run's observers and lm-eval scorer, built before the model so that their errors come first."""
    followers = run_observers(config, show_progress, observers)
    scorer = lm_eval_scorer(config)  # lm-eval tasks and their data are checked before the model loads
    return followers, scorer


def start_server(config: RunConfig, show_progress: bool = False, observers: Sequence[RunObserver] = ()) -> Server:
    """`check_server`, then the federation of `config` (measuring the budget profile if needed) and its
    coordinator."""
    followers, scorer = check_server(config, show_progress, observers)
    federation = build_federation(config)
    return Server(followers, federation, Coordinator(federation, scorer=scorer))
