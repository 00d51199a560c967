"""`fedhello compare`: a grid of methods x partitions x seeds on one shared set-up, and its results table."""

from fedhello.compare.grid import Cell, CompareSpec, load_grid, run_grid
from fedhello.compare.results import collect, write_results

__all__ = ["Cell", "CompareSpec", "collect", "load_grid", "run_grid", "write_results"]
