"""The HTML report of one run or several (`fedhello report`), and the observer that writes it after a run.
Run folders are read with `fedhello.rundir`; figures come from `fedhello.figures`."""

from fedhello.reporting.observer import ReportObserver
from fedhello.reporting.report import write_report

__all__ = ["ReportObserver", "write_report"]
