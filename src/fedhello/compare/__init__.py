"""`fedhello compare`: a grid of methods x partitions x seeds on one shared set-up, and its results table."""

from fedhello.runtime import defer_optional_imports

defer_optional_imports()  # before anything below imports peft

from fedhello.compare.grid import Cell, CompareSpec, Grid, load_compare, load_grid  # noqa: E402
from fedhello.compare.results import collect, write_results  # noqa: E402
from fedhello.compare.runner import GridRun, run_grid  # noqa: E402

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
