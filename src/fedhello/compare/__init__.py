"""`fedhello compare`: a grid of methods x partitions x seeds on one shared set-up, and its results table."""

from fedhello.compare.grid import Cell, CompareSpec, Grid, load_compare, load_grid
from fedhello.compare.results import collect, write_results
from fedhello.compare.runner import GridRun, run_grid

__all__ = [
    "Cell",
    "CompareSpec",
    "Grid",
    "GridRun",
    "collect",
    "load_compare",
    "load_grid",
    "run_grid",
    "write_results",
]
