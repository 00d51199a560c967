"""Run folders, plots and the HTML report."""

from fedhello.reporting.partition_stats import write_partition_stats
from fedhello.reporting.plots import plot_accuracy
from fedhello.reporting.report import write_report
from fedhello.reporting.run_dir import RunWriter, new_run_dir, summarize, write_atomic

__all__ = [
    "RunWriter",
    "new_run_dir",
    "plot_accuracy",
    "summarize",
    "write_atomic",
    "write_partition_stats",
    "write_report",
]
