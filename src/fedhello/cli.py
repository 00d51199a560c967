"""The `fedhello` command line."""

from __future__ import annotations

import sys
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


def fail(err: Exception) -> None:
    console.print(f"[red]error:[/red] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def run(
    config: ConfigArg,
    overrides: SetOpt = None,
    engine: Annotated[str, typer.Option(help="local (in-process)")] = "local",
    out: Annotated[Optional[Path], typer.Option(help="run folder (default: <output.dir>/<name>-<time>)")] = None,  # noqa: UP045
    dry_run: Annotated[bool, typer.Option("--dry-run", help="validate and print the resolved config only")] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Run a federated fine-tuning experiment and write its run folder."""
    from fedhello.config import load_config
    from fedhello.engines import ENGINES
    from fedhello.reporting import new_run_dir

    try:
        resolved = load_config(config, overrides)
        if engine not in ENGINES:
            raise FedHelloError(f"option '--engine': unknown engine '{engine}' (fix: use one of {ENGINES.names()})")
        if dry_run:
            typer.echo(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))
            return
        quiet_libraries()
        run_dir = new_run_dir(resolved, out)
        console.print(f"run folder: {run_dir}")
        summary = ENGINES.get(engine)().run(resolved, run_dir, show_progress=progress)
    except FedHelloError as err:
        fail(err)
    best, final = summary["best_accuracy"], summary["final_accuracy"]
    console.print(f"final accuracy {final:.4f}, best {best:.4f} (round {summary['best_round']})")
    console.print(f"results: {run_dir}")


@app.command()
def strategies() -> None:
    """List the registered allocation strategies, aggregators, partitioners and data sources."""
    from fedhello.aggregation import AGGREGATORS
    from fedhello.allocation import ALLOCATORS, PATTERNS
    from fedhello.data import PARTITIONERS, SOURCES

    typer.echo(f"strategies:   {', '.join(ALLOCATORS.names())}")
    typer.echo(f"patterns:     {', '.join(PATTERNS)}")
    typer.echo(f"aggregators:  {', '.join(AGGREGATORS.names())}")
    typer.echo(f"partitioners: {', '.join(PARTITIONERS.names())}")
    typer.echo(f"data sources: {', '.join(SOURCES.names())}")


def main() -> None:
    try:
        app()
    except FedHelloError as err:  # pragma: no cover - commands catch their own
        console.print(f"error: {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
