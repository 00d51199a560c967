"""The `fedhello` command line: `commands` (the typer app), `dry_run` (the plan printed by `run --dry-run`)
and `profile` (`fedhello profile`)."""

from fedhello.cli.commands import app, main

__all__ = ["app", "main"]
