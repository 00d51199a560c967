"""The `fedhello` command line: `commands` (the typer app), `dry_run` (the plan printed by `run --dry-run`)
and `profile` (`fedhello profile`)."""

from fedhello.runtime import defer_optional_imports

defer_optional_imports()  # before anything below imports peft

from fedhello.cli.commands import app, main  # noqa: E402

__all__ = ["app", "main"]
