"""Run folders and plots."""

from fedhello.reporting.plots import plot_accuracy
from fedhello.reporting.run_dir import RunWriter, new_run_dir, summarize, write_atomic

__all__ = ["RunWriter", "new_run_dir", "plot_accuracy", "summarize", "write_atomic"]
