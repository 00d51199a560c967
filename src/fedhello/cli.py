"""The `fedhello` command line."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml
from rich.console import Console

from fedhello.errors import FedHelloError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Federated heterogeneous LoRA fine-tuning.")
console = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="YAML experiment config, e.g. configs/default.yaml")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a field: --set train.lr=0.001")]  # noqa: UP045


def quiet_libraries() -> None:
    """Our own progress bar is enough: silence per-split `datasets` bars and load reports."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    # deprecation notices from inside transformers/peft are not actionable for a user of fedhello
    warnings.filterwarnings("ignore", category=FutureWarning)


def fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def run(
    config: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Argument(help="YAML experiment config, e.g. configs/default.yaml (optional with --resume)"),
    ] = None,
    overrides: SetOpt = None,
    engine: Annotated[
        str,
        typer.Option(
            help="local (in-process), flower-sim (Flower simulation, Ray), "
            "flower-deploy (a SuperLink and SuperNodes on 127.0.0.1); see docs/flower.md"
        ),
    ] = "local",
    out: Annotated[Optional[Path], typer.Option(help="run folder (default: <output.dir>/<name>-<time>)")] = None,  # noqa: UP045
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and print the resolved config only")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    html_report: Annotated[
        bool, typer.Option("--report/--no-report", help="write RUN_DIR/report/report.html at the end")
    ] = True,
    resume: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("--resume", help="continue this run folder from its last checkpoint"),
    ] = None,
    method: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="apply a method preset (fedhello compare --list), e.g. hetlora; --set still wins"),
    ] = None,
) -> None:
    """Run a federated fine-tuning experiment and write its run folder."""
    from fedhello.config import load_config
    from fedhello.engines import ENGINES
    from fedhello.methods.compatibility import budget_note
    from fedhello.reporting import new_run_dir

    try:
        if method is not None:
            from fedhello.methods import method_overrides

            overrides = [*method_overrides(method), *(overrides or [])]
        if resume is not None:
            from fedhello.server.checkpoint import resume_config

            resolved = resume_config(resume, config, overrides, out)
            out = resume
        elif config is None:
            raise FedHelloError("argument 'CONFIG': missing (fix: give a YAML config, or --resume RUN_DIR)")
        else:
            resolved = load_config(config, overrides)
        if engine not in ENGINES:
            raise FedHelloError(f"option '--engine': unknown engine '{engine}' (fix: use one of {ENGINES.names()})")
        note = budget_note(resolved)
        if note:
            console.print(note, highlight=False, soft_wrap=True)
        if dry_run:
            from fedhello.tasks.dry_run import describe_plan

            typer.echo(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))
            quiet_libraries()
            typer.echo(describe_plan(resolved))  # sizes from the architecture only: nothing is downloaded
            return
        quiet_libraries()
        run_dir = new_run_dir(resolved, out)
        console.print(f"run folder: {run_dir}")
        resuming = {"resume": True} if resume is not None else {}
        summary = ENGINES.get(engine)().run(resolved, run_dir, show_progress=progress, **resuming)
    except FedHelloError as err:
        fail(err)
    best, final = summary["best_accuracy"], summary["final_accuracy"]
    console.print(f"final accuracy {final:.4f}, best {best:.4f} (round {summary['best_round']})")
    console.print(f"results: {run_dir}")
    if html_report:
        report_after_run(run_dir)


def report_after_run(run_dir: Path) -> None:
    """Write the run's HTML report and print its path; a failure only warns (the results are on disk)."""
    from fedhello.reporting import write_report

    try:
        path = write_report([run_dir])
    except Exception as err:  # noqa: BLE001 - never turn a finished run into a crash
        console.print(f"[yellow]warning:[/yellow] report not written: {err} (retry: fedhello report {run_dir})")
        return
    console.print(f"report: {path}")


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="one or more run folders; several are overlaid")],
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="output folder (default: RUN_DIR/report; for several runs <parent>/compare-<time>)"),
    ] = None,
) -> None:
    """Write a self-contained HTML report (plots embedded, no network needed) and its PNGs."""
    from fedhello.reporting import write_report

    try:
        path = write_report(run_dirs, out)
    except FedHelloError as err:
        fail(err)
    typer.echo(str(path))


@app.command()
def strategies() -> None:
    """List the registered allocation strategies, aggregators, partitioners and data sources."""
    from fedhello.aggregation import AGGREGATORS
    from fedhello.allocation import ALLOCATORS, PATTERNS
    from fedhello.data import PARTITIONERS, SOURCES

    typer.echo(f"strategies:   {', '.join(ALLOCATORS.names())}")
    ignoring = [name for name in ALLOCATORS.names() if not ALLOCATORS.get(name).respects_budgets]
    typer.echo(f"              (ignore the tier budgets, every client trains every layer: {', '.join(ignoring)})")
    typer.echo(f"patterns:     {', '.join(PATTERNS)}")
    typer.echo(f"aggregators:  {', '.join(AGGREGATORS.names())}")
    typer.echo(f"partitioners: {', '.join(PARTITIONERS.names())}")
    typer.echo(f"data sources: {', '.join(SOURCES.names())}")


@app.command()
def compare(
    config: Annotated[Optional[Path], typer.Argument(help="comparison config, e.g. configs/compare/ci.yaml")] = None,  # noqa: UP045
    overrides: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="grid folder (default: compare.out)")] = None,  # noqa: UP045
    list_methods: Annotated[bool, typer.Option("--list", help="list the registered methods and exit")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar over cells")] = True,
    report_only: Annotated[bool, typer.Option("--report-only", help="only tabulate the finished cells")] = False,
) -> None:
    """Run methods x partitions x seeds on one shared set-up (finished cells are kept, the others run in
    compare.workers processes) and write results.md, results.csv, cells.csv and plots."""
    import shlex
    import time

    from fedhello.compare import GridRun, load_compare, run_grid, write_results
    from fedhello.methods import METHODS

    started = time.perf_counter()
    if list_methods:
        for method in METHODS.values():
            typer.echo(f"{method.name:22s}{method.summary}")
        return
    if config is None:
        fail(FedHelloError("argument 'CONFIG': missing (fix: pass a comparison config, e.g. configs/compare/ci.yaml)"))
    try:
        grid = load_compare(config, overrides, out)
        cells, spec = grid.cells, grid.spec
        quiet_libraries()
        finished = sum(c.done for c in cells)
        console.print(f"grid folder: {grid.root} ({len(cells)} cells, {finished} already finished)")
        if report_only:
            run = GridRun(skipped=finished)
        else:
            run = run_grid(cells, show_progress=progress, workers=spec.workers)
        run_args = [a for a in sys.argv[2:] if a != "--report-only"]  # the command that ran the cells
        command = "fedhello compare " + " ".join(shlex.quote(a) for a in run_args)
        paths = write_results(
            cells, grid.root, command, spec.reference, spec.last_k, run, time.perf_counter() - started
        )
    except FedHelloError as err:
        fail(err)
    console.print(f"ran {run.ran} cells, kept {run.skipped} finished ones ({run.workers} workers)")
    console.print(f"results: {paths['md']}")
    typer.echo(paths["md"].read_text())
    if run.failed:
        for cell, error in run.failed:
            console.print(f"[red]failed:[/red] {cell.label}: {error}", highlight=False, soft_wrap=True)
        console.print(f"{len(run.failed)} cells failed (tracebacks in their error.txt); re-run to retry them")
        raise typer.Exit(code=1)


@app.command()
def profile(
    config: Annotated[Optional[Path], typer.Argument(help="YAML experiment config")] = None,  # noqa: UP045
    overrides: SetOpt = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="measure again even if a cached profile exists")] = False,
    steps: Annotated[int, typer.Option(help="timed steps per layer set (median)")] = 3,
    warmup: Annotated[int, typer.Option(help="untimed warm-up steps per layer set")] = 1,
    check: Annotated[Optional[Path], typer.Option(help="RUN_DIR: budget vs measured per tier of a run")] = None,  # noqa: UP045
) -> None:
    """Peak memory and step time of local training per tier and layer set; budgets -> constraints."""
    from fedhello.config import load_config
    from fedhello.resources.budgets import budget_report, profile_command
    from fedhello.resources.report import format_budget_report

    try:
        if check is not None:
            if not (check / "metrics.jsonl").is_file():
                raise FedHelloError(f"option '--check': '{check}' has no metrics.jsonl (fix: give a run folder)")
            typer.echo(format_budget_report(budget_report(check)))
            return
        if config is None:
            raise FedHelloError("argument 'CONFIG': missing (fix: give a YAML config, or --check RUN_DIR)")
        resolved = load_config(config, overrides)
        quiet_libraries()
        typer.echo(profile_command(resolved, refresh, steps, warmup, echo=lambda line: console.print(line)))
    except FedHelloError as err:
        fail(err)


def main() -> None:
    try:
        app()
    except FedHelloError as err:  # pragma: no cover - commands catch their own
        console.print(f"error: {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
