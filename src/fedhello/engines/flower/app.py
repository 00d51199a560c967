"""The fedhello Flower app as Flower sees it, defined once: its components, its run-config keys (what
`flwr run --run-config` may set), the pyproject.toml of the app the deploy engine submits (generated from
both), and the environment of every Flower process.

The repository's own pyproject.toml carries the same `[tool.flwr.app]` section for `flwr run .`
(scripts/deploy-local.sh); a test checks it matches `app_section()`.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PUBLISHER = "fedhello"
COMPONENTS = {
    "serverapp": "fedhello.engines.flower.serverapp:app",
    "clientapp": "fedhello.engines.flower.clientapp:app",
}
# run-config keys and their defaults: the YAML config (absolute path, "" = built-in defaults), `--set`
# overrides (space-separated key=value), the run folder ("" = a new one), whether to resume it, and whether the
# ServerApp writes the HTML report at the end (`fedhello run` writes its own, so its engine turns it off)
CONFIG, OVERRIDES, RUN_DIR, RESUME, REPORT = "config", "overrides", "run-dir", "resume", "report"
RUN_CONFIG: dict[str, Any] = {CONFIG: "", OVERRIDES: "", RUN_DIR: "", RESUME: False, REPORT: True}
# every Flower process: no telemetry (there is no network), never a per-run install of torch & co.
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_DEDUP_LOGS": "0",
    # flower-superexec looks for a new app to start every second by default (the SuperLink's ServerApp, a
    # SuperNode's per-message ClientApp under --isolation subprocess)
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
}


@dataclass(frozen=True)
class RunRequest:
    """What a fedhello run asks of the app, as Flower's run config carries it."""

    config: str = ""
    overrides: list[str] | None = None
    run_dir: str = ""
    resume: bool = False
    report: bool = True

    def to_run_config(self) -> dict[str, Any]:
        return {
            CONFIG: self.config,
            OVERRIDES: " ".join(shlex.quote(o) for o in self.overrides or []),
            RUN_DIR: self.run_dir,
            RESUME: self.resume,
            REPORT: self.report,
        }

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> RunRequest:
        """Read Flower's run config (unknown keys ignored, missing ones default; shell quoting in overrides)."""
        values = {**RUN_CONFIG, **run_config}
        return cls(
            config=str(values[CONFIG] or ""),
            overrides=shlex.split(str(values[OVERRIDES] or "")),
            run_dir=str(values[RUN_DIR] or ""),
            resume=bool(values[RESUME]),
            report=bool(values[REPORT]),
        )


# Flower 1.42 retries an object that is not there yet (a message's parts still on their way between SuperLink,
# SuperNode and app) after 1 s, doubling up to 10 s, 500 times: every hand-over of a round can cost a second.
# fedhello's processes retry after 20 ms, doubling up to 0.5 s, with as many tries as keep Flower's patience.
OBJECT_PULL_RETRY = {"initial_backoff": 0.02, "backoff_cap": 0.5, "max_tries_per_object": 10_000}


def shorten_object_pull_retry() -> None:
    """Apply `OBJECT_PULL_RETRY` to Flower's object pulls in this process (their keyword defaults)."""
    from flwr.supercore.inflatable import inflatable_utils

    for pull in (inflatable_utils.pull_objects, inflatable_utils.pull_and_inflate_object_from_tree):
        pull.__kwdefaults__.update(OBJECT_PULL_RETRY)


# The repository's pyproject.toml adds `fab-include` to this section: `flwr run .` would pack every .py/.md/.yaml/
# .json(l) file of the repository into the app bundle, which Flower caps at 10 MB, and the recorded results
# (docs/results) alone exceed it. The code and the configs are the app. (A generated app folder has neither, and
# Flower refuses a pattern that matches nothing, so it is not in `app_section`.)
REPOSITORY_FAB_INCLUDE = ["src/**/*.py", "configs/**/*.yaml"]


def app_section() -> dict[str, Any]:
    """The `[tool.flwr.app]` table of the app's pyproject.toml (the repository's adds `REPOSITORY_FAB_INCLUDE`)."""
    return {"publisher": PUBLISHER, "components": dict(COMPONENTS), "config": dict(RUN_CONFIG)}


def write_app(folder: Path) -> Path:
    """A Flower app folder whose code is the installed fedhello package: no dependencies of its own, so
    Flower never installs anything per run (torch and friends are already in this environment)."""
    import tomli_w

    pyproject = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {"name": "fedhello-flower", "version": "1.0.0", "dependencies": []},
        "tool": {"hatch": {"build": {"targets": {"wheel": {"packages": ["."]}}}}, "flwr": {"app": app_section()}},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(tomli_w.dumps(pyproject))
    return folder
