"""User-facing errors: one line, naming the field and the fix, never a traceback."""


class FedHelloError(Exception):
    """An error caused by user input (config, paths, checkpoints). The CLI prints it as one line."""


class ConfigError(FedHelloError):
    """A config value is missing, malformed or inconsistent."""

    def __init__(self, field: str, problem: str, fix: str = "") -> None:
        self.field, self.problem, self.fix = field, problem, fix
        message = f"config field '{field}': {problem}"
        if fix:
            message += f" (fix: {fix})"
        super().__init__(message)
