"""The Flower app is defined once (`fedhello.engines.flower.app`): the repository's pyproject.toml, the app the
deploy engine submits and the ServerApp's reading of the run config all agree with it."""

from __future__ import annotations

import tomllib
from pathlib import Path

from fedhello.engines.flower.app import RUN_CONFIG, RunRequest, app_section, write_app
from fedhello.engines.flower.serverapp import config_from_run_config


def test_repository_pyproject_declares_the_same_app():
    from fedhello.engines.flower.app import REPOSITORY_FAB_INCLUDE

    section = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert section.pop("fab-include") == REPOSITORY_FAB_INCLUDE
    assert section == app_section()


def test_submitted_app_is_generated_from_the_same_definition(tmp_path):
    app = write_app(tmp_path / "app")
    pyproject = tomllib.loads((app / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"] == app_section()
    assert pyproject["project"]["dependencies"] == [], "Flower must never install anything per run"


def test_run_request_round_trips_through_the_run_config(tmp_path):
    request = RunRequest(config="", overrides=["federation.rounds=2", "name=a b"], run_dir=str(tmp_path / "r"))
    run_config = request.to_run_config()
    assert set(run_config) == set(RUN_CONFIG)
    assert RunRequest.from_run_config(run_config) == request
    config, run_dir, resume = config_from_run_config(run_config)
    assert config.federation.rounds == 2 and config.name == "a b"
    assert run_dir == tmp_path / "r" and run_dir.is_dir() and resume is False
