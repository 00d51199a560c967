"""`ReportObserver`: writes a run's HTML report when the run ends (what `fedhello run` does unless
`--no-report`). A failed report never fails the run: the error is kept for the caller to show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedhello.events import RunObserver
from fedhello.reporting.report import write_report


class ReportObserver(RunObserver):
    """After the last round: RUN_DIR/report/report.html. `path` is the page, or `error` why it is missing."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self.error: Exception | None = None

    def on_run_end(self, summary: dict[str, Any]) -> None:
        try:
            self.path = write_report([summary["run_dir"]])
        except Exception as err:  # noqa: BLE001 - never turn a finished run into a crash
            self.error = err
