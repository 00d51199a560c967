"""User-facing errors: one line, naming the field and the fix, never a traceback."""


class FedHelloError(Exception):
    """An error caused by user input (config, paths, checkpoints). The CLI prints it as one line."""


class ConfigError(FedHelloError):
    """A config value (or a command-line option such as `--engine`) is missing, malformed or inconsistent."""

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field, self.problem, self.fix = field, problem, fix
        where = f"option '{field}'" if field.startswith("--") else f"config field '{field}'"
        message = f"{where}: {problem}"
        if fix:
            message += f" (fix: {fix})"
        super().__init__(message)
