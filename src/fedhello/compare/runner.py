"""Running the unfinished cells of a grid: one after another in this process, or in parallel worker processes.

Parallel cells (local engine only; the Flower engines start processes of their own) run in a pool of `spawn`ed
processes, reused across cells. Each worker limits torch, OpenMP and MKL to one thread before torch is
imported, and runs a cell exactly as the sequential path does, so on CPU its numbers are identical to a
sequential run with one thread (`OMP_NUM_THREADS=1`, as the test suite runs). Results are kept in grid order
whatever the completion order. A cell that fails is reported in one line (its traceback goes to
`RUN_DIR/error.txt`) and the other cells go on. With memory / time budget tiers, the budget profiles the
cells need and the cache lacks are measured first, one at a time in one worker of the pool (the cells' own
one-thread settings, no other process competing for the cores); then every cell starts and reads them from
the cache. Finished cells are kept, so a grid may be completed over several invocations.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from fedhello.compare.grid import Cell
from fedhello.config import RunConfig

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# glibc malloc settings of the worker processes (read when a process starts, so set before the pool spawns
# them; ignored by other allocators): keep freed memory instead of handing it back to the kernel and faulting
# it in again on the next step. Measured on a bench cell: 17.0 -> 10.1 million minor page faults, system time
# 37.7 -> 23.0 s, user+system CPU -13.5 %, the same accuracies (docs/results/README.md).
_ALLOCATOR_VARIABLES = {"MALLOC_MMAP_THRESHOLD_": str(256 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


@dataclass(frozen=True)
class CellOutcome:
    """How running one cell went: its wall time (set-up included) and, if it failed, one line saying why."""

    seconds: float
    error: str | None = None


@dataclass
class GridRun:
    """What `run_grid` did."""

    ran: int = 0
    skipped: int = 0
    workers: int = 1
    seconds: float = 0.0
    failed: list[tuple[Cell, str]] = field(default_factory=list)  # grid order


def _uses_gpu(cells: Sequence[Cell]) -> bool:
    devices = {cell.config.train.device for cell in cells}
    if any(d.startswith("cuda") for d in devices):
        return True
    if "auto" in devices:
        import torch

        return torch.cuda.is_available()
    return False


def resolve_workers(requested: int, todo: Sequence[Cell]) -> int:
    """Worker processes for the unfinished cells `todo`: `requested` (0 = one per CPU core, or one when the
    cells train on a GPU), at most one per cell, and 1 when a cell's engine is not the local one."""
    if len(todo) <= 1 or any(cell.engine != "local" for cell in todo):
        return 1
    wanted = requested or (1 if _uses_gpu(todo) else os.cpu_count() or 1)
    return max(1, min(wanted, len(todo)))


def _init_worker() -> None:
    """Pool initializer: one thread per worker (set before torch is imported) and quiet libraries."""
    for name in _THREAD_VARIABLES:
        os.environ[name] = "1"
    # TOKENIZERS_PARALLELISM stays as it is: a single-threaded tokenizer leaves its freed buffers in the main heap,
    # where malloc hands them out again without growing the resident set, and the peak-memory meter of budget
    # profiles and train.record_resources then under-reads (measured in a worker: 69 instead of 90 MiB for every
    # layer of the bench, 0 for the head alone; docs/benchmarks.md)
    import warnings

    import datasets
    import torch
    import transformers

    torch.set_num_threads(1)
    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def run_cell(cell: Cell) -> CellOutcome:
    """Run one cell from scratch with its engine (a stale or interrupted folder is removed first, since
    metrics.jsonl is appended to). An exception is caught: its traceback is written to RUN_DIR/error.txt."""
    from fedhello.engines import ENGINES

    if cell.run_dir.exists():
        shutil.rmtree(cell.run_dir)
    started = time.perf_counter()
    try:
        ENGINES.get(cell.engine)().run(cell.config, cell.run_dir, show_progress=False)
    except Exception as err:  # noqa: BLE001 - one failed cell must not stop the grid
        cell.run_dir.mkdir(parents=True, exist_ok=True)
        (cell.run_dir / "error.txt").write_text(traceback.format_exc())
        return CellOutcome(time.perf_counter() - started, _one_line(err))
    return CellOutcome(time.perf_counter() - started)


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]cells"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        disable=not show,
    )


def _profile_files(config: RunConfig) -> list[Path] | None:
    """The cache files of the budget profiles a cell of `config` reads (one per quantization its budget tiers
    load), or None when they cannot be named here: a GPU device (the key holds the device the model lands
    on, known once it is built) or an `auto` tier (it may try every quantization)."""
    from fedhello.resources.profile import cache_dir, profile_key

    device = config.train.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    quantizations = {t.quantization or config.model.quantization for t in config.tiers if t.has_budget}
    if device != "cpu" or "auto" in quantizations:
        return None
    files = []
    for quantization in sorted(quantizations):
        keyed = config.model_copy(deep=True)
        keyed.model.quantization = quantization  # as the profile of a tier's own quantization is keyed
        files.append(cache_dir() / f"{profile_key(keyed, device)}.json")
    return files


def profiles_to_measure(cells: Sequence[Cell]) -> list[Cell]:
    """One cell per distinct budget profile the cells need and the cache lacks (cells whose presets change
    the profile key, e.g. HetLoRA's LoRA options, need a profile of their own). A profile whose cache file
    cannot be named is measured anyway: loading a cached one takes seconds."""
    budgeted = [cell for cell in cells if any(tier.has_budget for tier in cell.config.tiers)]
    if not budgeted:
        return []  # no profile to read, and no torch import in this process
    from fedhello.resources.profile import profile_key

    todo: dict[str, Cell] = {}
    for cell in budgeted:
        files = _profile_files(cell.config)
        if files is not None and all(f.is_file() for f in files):
            continue
        key = " ".join(f.name for f in files) if files is not None else profile_key(cell.config, "any")
        todo.setdefault(key, cell)
    return list(todo.values())


def measure_profile(config: RunConfig) -> None:
    """Load or measure (and cache) every budget profile a cell of `config` reads: build its experiment and
    resolve its budgets, as the cell itself will."""
    from fedhello.experiment import build_experiment
    from fedhello.resources.budgets import resolve_budgets

    resolve_budgets(build_experiment(config))


def _run_in_pool(
    profiles: list[Cell],
    cells: list[tuple[int, Cell]],
    workers: int,
    finished: Callable[[int, CellOutcome], None],
    measuring: Callable[[Cell], None] = lambda cell: None,
) -> None:
    """Measure the `profiles` one at a time in one worker, then run the cells in `workers` spawned processes
    (the same pool); call `measuring(cell)` before each profile and `finished(index, outcome)` as each cell
    ends. A profile that fails is left to its cells, which measure it themselves or report the error."""
    context = get_context("spawn")
    for name, value in _ALLOCATOR_VARIABLES.items():
        os.environ.setdefault(name, value)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker)
    try:
        for cell in profiles:
            measuring(cell)
            with contextlib.suppress(Exception):  # the cells run the same code and report what fails
                pool.submit(measure_profile, cell.config).result()
        futures: dict[Future[CellOutcome], int] = {pool.submit(run_cell, cell): i for i, cell in cells}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as err:  # noqa: BLE001 - e.g. a worker killed for memory (BrokenProcessPool)
                outcome = CellOutcome(0.0, _one_line(err))
            finished(futures[future], outcome)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def run_grid(cells: list[Cell], show_progress: bool = True, workers: int = 1) -> GridRun:
    """Run every unfinished cell (`workers`: see `resolve_workers`; 1 runs them here, in grid order, without
    a pool). Failed cells are reported as they end and listed in the result, in grid order."""
    started = time.perf_counter()
    unfinished = [(i, cell) for i, cell in enumerate(cells) if not cell.done]
    # cells that share a run folder (a partition-free method on every partition) run once
    first: dict[Path, int] = {}
    twins: dict[int, list[int]] = {}
    todo = []
    for i, cell in unfinished:
        if cell.run_dir in first:
            twins[first[cell.run_dir]].append(i)
        else:
            first[cell.run_dir] = i
            twins[i] = []
            todo.append((i, cell))
    result = GridRun(skipped=len(cells) - len(unfinished), workers=resolve_workers(workers, [c for _, c in todo]))
    outcomes: dict[int, CellOutcome] = {}
    progress = _progress(show_progress)
    with progress:
        bar = progress.add_task("", total=len(cells), completed=result.skipped)

        def finished(index: int, outcome: CellOutcome) -> None:
            for done in (index, *twins.get(index, [])):
                outcomes[done] = outcome
            if outcome.error:
                cell = cells[index]
                progress.console.print(
                    f"[red]cell failed[/red] {cell.label}: {outcome.error} (see {cell.run_dir / 'error.txt'})",
                    highlight=False,
                    soft_wrap=True,
                )
            running = len(unfinished) - len(outcomes)
            progress.update(
                bar, advance=1 + len(twins.get(index, [])), description=f"{cells[index].label} done, {running} to go"
            )

        if result.workers == 1:
            for index, cell in todo:
                progress.update(bar, description=cell.label)
                finished(index, run_cell(cell))
        else:
            progress.update(bar, description=f"{result.workers} workers")

            def measuring(cell: Cell) -> None:
                progress.update(bar, description=f"measuring the budget profile of {cell.label}")

            # budget tiers: each missing profile is measured once, alone, cached, and then read by every cell
            profiles = profiles_to_measure([c for _, c in todo])
            _run_in_pool(profiles, todo, result.workers, finished, measuring)
    result.ran = sum(outcomes[i].error is None for i, _ in todo if i in outcomes)  # runs, not shared cells
    result.failed = [(cells[i], outcomes[i].error or "") for i in sorted(outcomes) if outcomes[i].error]
    result.seconds = time.perf_counter() - started
    return result
