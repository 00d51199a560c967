"""The `fedhello` command line.

No command shows a traceback. An expected failure (bad config, data, model or checkpoint: `FedHelloError`)
ends with one line naming the field and the fix; anything else ends with one line saying it is a bug and where
its traceback is. Full tracebacks, for bug reports, are appended to `RUN_DIR/error.log` once a run folder
exists; before that, a bug's goes to a new file in `<tmp>/fedhello-errors/` (an expected failure without a run
folder writes nothing: its one line says all there is, and a mistyped config should not leave files behind).
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, Optional, ParamSpec

import click
import typer
import yaml
from rich.console import Console
from rich.markup import escape

from fedhello.errors import FedHelloError
from fedhello.rundir.files import ERROR_LOG
from fedhello.runtime import quiet_libraries

if TYPE_CHECKING:
    from fedhello.config import RunConfig

P = ParamSpec("P")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Federated heterogeneous LoRA fine-tuning.")
console = Console(stderr=True)

ConfigArg = Annotated[Path, typer.Argument(help="YAML experiment config, e.g. configs/default.yaml")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override a field: --set train.lr=0.001")]  # noqa: UP045


EXIT_USER_ERROR, EXIT_BUG, EXIT_INTERRUPTED = 2, 1, 130

# the run folder of the command in progress, once it exists (where `error.log` goes)
current_run_dir: ContextVar[Path | None] = ContextVar("current_run_dir", default=None)


def error_log(run_dir: Path | None) -> Path:
    """Where a failure's traceback goes: the run folder's error.log, or a fresh file in
    <tmp>/fedhello-errors/ when no run folder exists yet."""
    if run_dir is not None and run_dir.is_dir():
        return run_dir / ERROR_LOG
    folder = Path(tempfile.gettempdir()) / "fedhello-errors"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def write_traceback(err: BaseException, run_dir: Path | None) -> Path | None:
    """Append the command line and the full traceback of `err` to `error_log(run_dir)`; its path, or None
    when nothing could be written (a failing log must not hide the error itself)."""
    try:
        path = error_log(run_dir)
        with path.open("a") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} fedhello {' '.join(sys.argv[1:])}\n")
            log.write("".join(traceback.format_exception(err)))
        return path
    except OSError:
        return None


def fail(err: BaseException, run_dir: Path | None = None) -> NoReturn:
    """End the command with one line on stderr. An expected failure (`FedHelloError`: bad config, data,
    model, checkpoint) prints its message; anything else is a bug in fedhello and says so, with where its
    traceback is. Tracebacks are kept as the module docstring says (`write_traceback`)."""
    expected = isinstance(err, FedHelloError)
    log = write_traceback(err, run_dir) if run_dir is not None or not expected else None
    if expected:
        # escaped: a message's brackets (pip install 'fedhello[llm]') are text, not rich markup
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=EXIT_USER_ERROR)
    text = str(err).strip()
    what = f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__
    where = f"the traceback is in {log}" if log else "no traceback could be written"
    console.print(
        f"[red]error:[/red] unexpected {escape(what)} -- this is a bug in fedhello; {escape(where)} "
        "(please attach it to a bug report)",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(code=EXIT_BUG)


def reports_failures(command: Callable[P, None]) -> Callable[P, None]:
    """Wrap a command so that no traceback reaches the user: every exception becomes one line (`fail`),
    Ctrl-C a line saying how to resume."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        token = current_run_dir.set(None)
        try:
            command(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException):
            raise
        except KeyboardInterrupt:
            run_dir = current_run_dir.get()
            again = f"; continue with: fedhello run --resume {run_dir}" if run_dir else ""
            console.print(f"interrupted{again}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=EXIT_INTERRUPTED) from None
        except Exception as err:
            fail(err, current_run_dir.get())
        finally:
            current_run_dir.reset(token)

    return wrapper


@app.command()
@reports_failures
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
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="validate, then print the resolved config and the plan; train nothing")
    ] = False,
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
    from fedhello.reporting import ReportObserver
    from fedhello.rundir import new_run_dir

    adjusted = None
    if method is not None:
        from fedhello.methods import METHODS, method_overrides

        if METHODS.get(method, "--method").adjust is not None and resume is None and config is not None:
            # a preset computed from the experiment (centralized: the steps of a round): --set first, then the preset
            adjusted = _config_with_method(config, method, overrides)
        overrides = [*method_overrides(method), *(overrides or [])]
    if adjusted is not None:
        resolved = adjusted
    elif resume is not None:
        from fedhello.server.resume import resume_config, resume_message

        resolved = resume_config(resume, config, overrides, out)
        out = resume
        if not dry_run:
            console.print(resume_message(resume, resolved), highlight=False, soft_wrap=True)
    elif config is None:
        raise FedHelloError("argument 'CONFIG': missing (fix: give a YAML config, or --resume RUN_DIR)")
    else:
        resolved = load_config(config, overrides)
    engine_class = ENGINES.get(engine)
    note = budget_note(resolved)
    if note:
        console.print(note, highlight=False, soft_wrap=True)
    if dry_run:
        from fedhello.cli.dry_run import describe_plan

        quiet_libraries()
        # the plan first: it checks what the config alone cannot (model, data path, tiers against the model's
        # depth), so an error is the only line, not the last after a page of YAML
        plan = describe_plan(resolved)  # sizes from the architecture only: nothing is downloaded
        typer.echo(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))
        typer.echo(plan)
        return
    quiet_libraries()
    if any(tier.has_budget for tier in resolved.tiers):
        from fedhello.resources.budgets import profiles_cached
        from fedhello.resources.profile import cache_dir

        if not profiles_cached(resolved):  # a minute or two of silence otherwise
            console.print(
                "measuring the budget profile first (memory and time of representative layer sets; once per model, "
                f"batch and machine, cached in {cache_dir()})",
                highlight=False,
            )
    run_dir = new_run_dir(resolved, out)
    current_run_dir.set(run_dir)  # from here on a failure's traceback goes to RUN_DIR/error.log
    console.print(f"run folder: {run_dir}")
    report = ReportObserver() if html_report else None
    summary = engine_class().run(
        resolved, run_dir, show_progress=progress, resume=resume is not None, observers=[report] if report else []
    )
    best, final = summary["best_accuracy"], summary["final_accuracy"]
    metric = summary.get("metric", "accuracy")  # the task's headline metric, e.g. rouge_l for a causal LM
    console.print(f"final {metric} {final:.4f}, best {best:.4f} (round {summary['best_round']})")
    if "epsilon" in summary:  # differential privacy (privacy.mode): what the run spent
        console.print(f"privacy spent: epsilon {summary['epsilon']:.3g} at delta {summary['delta']:g}", highlight=False)
    if summary.get("stopped"):
        console.print(f"stopped early: {summary['stopped']}", highlight=False)
    console.print(f"results: {run_dir}")
    if report is not None and report.path is not None:
        console.print(f"report: {report.path}")
    elif report is not None:  # the results are on disk: a failed report only warns
        retry = f"retry: fedhello report {run_dir}"
        console.print(f"[yellow]warning:[/yellow] report not written: {report.error} ({retry})")


def _config_with_method(config: Path, method: str, overrides: list[str] | None) -> RunConfig:
    """The config of `fedhello run CONFIG --set ... --method NAME` for a preset that reads the experiment."""
    from fedhello.config import config_from_dict, parse_override, read_yaml_tree, set_dotted
    from fedhello.methods import apply_method

    tree = read_yaml_tree(Path(config))
    for text in overrides or []:
        set_dotted(tree, *parse_override(text))
    return config_from_dict(apply_method(tree, method, "--method"))


@app.command()
@reports_failures
def report(
    run_dirs: Annotated[list[Path], typer.Argument(help="one or more run folders; several are overlaid")],
    out: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(help="output folder (default: RUN_DIR/report; for several runs <parent>/compare-<time>)"),
    ] = None,
) -> None:
    """Write a self-contained HTML report (plots embedded, no network needed) and its PNGs."""
    from fedhello.reporting import write_report

    typer.echo(str(write_report(run_dirs, out)))


@app.command("config")
@reports_failures
def config_reference(
    section: Annotated[
        Optional[str],  # noqa: UP045
        typer.Argument(help="a section (train), a field (train.lr) or 'run' for the top-level fields; default: all"),
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="print docs/config.md: every field as Markdown tables")
    ] = False,
) -> None:
    """List the configuration fields (dotted name, type, default, description), generated from the code."""
    from fedhello.cli.reference import format_markdown, format_text, reference_rows, select

    rows = select(reference_rows(), section)
    typer.echo(format_markdown(rows) if markdown else format_text(rows))


@app.command()
@reports_failures
def export(
    run_dir: Annotated[Path, typer.Argument(help="a finished run folder (with adapter/)")],
    out_dir: Annotated[Path, typer.Argument(help="a new folder for the self-contained adapter")],
) -> None:
    """Write a run's global adapter as a folder peft's Auto classes load from anywhere (base path, tokenizer,
    class names), e.g. AutoPeftModelForSequenceClassification.from_pretrained(OUT_DIR)."""
    from fedhello.cli.export import export_adapter

    quiet_libraries()
    typer.echo(str(export_adapter(run_dir, out_dir)))


@app.command()
@reports_failures
def strategies() -> None:
    """List the registered allocation strategies, aggregators, partitioners, data sources, tasks, engines and
    loggers."""
    from fedhello.components import AGGREGATORS, ALLOCATORS
    from fedhello.data import PARTITIONERS, SOURCES
    from fedhello.engines import ENGINES
    from fedhello.loggers import LOGGERS
    from fedhello.patterns import PATTERNS
    from fedhello.tasks import TASKS

    typer.echo(f"strategies:   {', '.join(ALLOCATORS.names())}")
    ignoring = [name for name in ALLOCATORS.names() if not ALLOCATORS.get(name).respects_budgets]
    typer.echo(f"              (ignore the tier budgets, every client trains every layer: {', '.join(ignoring)})")
    typer.echo(f"patterns:     {', '.join(PATTERNS)}")
    typer.echo(f"aggregators:  {', '.join(AGGREGATORS.names())}")
    typer.echo(f"partitioners: {', '.join(PARTITIONERS.names())}")
    typer.echo(f"data sources: {', '.join(SOURCES.names())}")
    typer.echo(f"tasks:        {', '.join(TASKS.names())}")
    typer.echo(f"engines:      {', '.join(ENGINES.names())}")
    typer.echo(f"loggers:      {', '.join(LOGGERS.names())}")


@app.command()
@reports_failures
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
        for name, method in METHODS.items():
            typer.echo(f"{name:22s}{method.summary}")
        return
    if config is None:
        raise FedHelloError("argument 'CONFIG': missing (fix: pass a comparison config, e.g. configs/compare/ci.yaml)")
    grid = load_compare(config, overrides, out)
    cells, spec = grid.cells, grid.spec
    quiet_libraries()
    current_run_dir.set(grid.root)  # once it exists, a failure's traceback goes to <grid folder>/error.log
    finished = sum(c.done for c in cells)
    console.print(f"grid folder: {grid.root} ({len(cells)} cells, {finished} already finished)")
    run = GridRun(skipped=finished) if report_only else run_grid(cells, show_progress=progress, workers=spec.workers)
    run_args = [a for a in sys.argv[2:] if a != "--report-only"]  # the command that ran the cells
    command = "fedhello compare " + " ".join(shlex.quote(a) for a in run_args)
    paths = write_results(
        cells,
        grid.root,
        command,
        spec.reference,
        spec.last_k,
        run,
        time.perf_counter() - started,
        spec.target_half_width,
    )
    console.print(f"ran {run.ran} cells, kept {run.skipped} finished ones ({run.workers} workers)")
    console.print(f"results: {paths['md']}")
    typer.echo(paths["md"].read_text())
    if run.failed:
        for cell, error in run.failed:
            console.print(f"[red]failed:[/red] {cell.label}: {error}", highlight=False, soft_wrap=True)
        console.print(f"{len(run.failed)} cells failed (tracebacks in their error.txt); re-run to retry them")
        raise typer.Exit(code=1)


@app.command()
@reports_failures
def profile(
    config: Annotated[Optional[Path], typer.Argument(help="YAML experiment config")] = None,  # noqa: UP045
    overrides: SetOpt = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="measure again even if a cached profile exists")] = False,
    steps: Annotated[int, typer.Option(help="timed steps per layer set (median)")] = 3,
    warmup: Annotated[int, typer.Option(help="untimed warm-up steps per layer set")] = 1,
    check: Annotated[Optional[Path], typer.Option(help="RUN_DIR: budget vs measured per tier of a run")] = None,  # noqa: UP045
    quantization: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            help="comma-separated base-weight quantizations to profile, e.g. none,int8,nf4 (default: the "
            "run's and its tiers')"
        ),
    ] = None,
) -> None:
    """Peak memory and step time of local training per tier and layer set; budgets -> constraints."""
    from fedhello.cli.profile import profile_command
    from fedhello.config import load_config
    from fedhello.resources.budgets import budget_report
    from fedhello.resources.report import format_budget_report
    from fedhello.rundir import METRICS_FILE

    if check is not None:
        if not (check / METRICS_FILE).is_file():
            raise FedHelloError(f"option '--check': '{check}' has no {METRICS_FILE} (fix: give a run folder)")
        typer.echo(format_budget_report(budget_report(check)))
        return
    if config is None:
        raise FedHelloError("argument 'CONFIG': missing (fix: give a YAML config, or --check RUN_DIR)")
    resolved = load_config(config, overrides)
    quiet_libraries()
    wanted = [q.strip() for q in quantization.split(",") if q.strip()] if quantization else []
    echo = lambda line: console.print(line)  # noqa: E731
    typer.echo(profile_command(resolved, refresh, steps, warmup, echo=echo, quantizations=wanted))


def main() -> None:
    try:
        app()
    except FedHelloError as err:  # pragma: no cover - commands catch their own
        console.print(f"error: {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
