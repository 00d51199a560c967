"""`fedhello run configs/paper/<each>.yaml --dry-run` validates and prints the plan with the hub offline."""

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedhello.cli import app
from fedhello.cli.dry_run import describe_plan
from fedhello.config import load_config
from fedhello.resources.estimate import model_shape

PAPER = sorted(Path("configs/paper").glob("*.yaml"))
runner = CliRunner()


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def test_every_paper_task_has_a_config():
    names = {p.stem for p in PAPER}
    assert {"cifar100-iid", "cifar100-noniid-20cls", "cifar100-noniid-10cls", "domainnet", "ledgar", "dolly"} <= names
    assert "natural-instructions" in names


@pytest.mark.parametrize("path", PAPER, ids=[p.stem for p in PAPER])
def test_paper_config_dry_run_prints_the_plan(path):
    result = runner.invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    config = load_config(path)
    out = result.output
    assert "plan (computed without downloading anything)" in out
    assert f"clients: {config.federation.num_clients}, {config.federation.clients_per_round} per round" in out
    assert f"{config.federation.rounds} rounds" in out
    # a tier with a budget reads "<=k/n": the budget may afford fewer layers than its count
    rows = re.findall(r"^  (\d+)\s+\S+\s+(?:<=)?(\d+)/(\d+)\s+(\d+)\s+[\d.]+\s+([\d.]+) MB", out, flags=re.M)
    marks = re.findall(r"^  \d+\s+\S+\s+(<=)?\d+/\d+\s+\d+\s+[\d.]+\s+[\d.]+ MB", out, flags=re.M)
    assert len(rows) == len(config.tiers)
    assert sum(int(r[3]) for r in rows) == config.federation.num_clients
    assert [int(r[1]) for r in rows] == [t.layers for t in config.tiers]
    assert [mark == "<=" for mark in marks] == [t.has_budget for t in config.tiers]
    uploads = [float(r[4]) for r in rows]
    assert uploads == sorted(uploads) and uploads[0] < uploads[-1], "more layers, more upload"


def test_paper_vit_sizes_match_the_architecture():
    shape = model_shape(load_config("configs/paper/cifar100-iid.yaml"))
    assert shape.num_layers == 12
    assert shape.layer_params == [2 * 16 * (768 + 768)] * 12  # q and v, r=16, 768 -> 768
    assert shape.head_params == 768 * 100 + 100


def test_dry_run_on_a_local_model_reads_its_config(vit_config):
    text = describe_plan(vit_config)
    assert "4 layers" in text and "config.json in" in text


def test_dry_run_rejects_too_many_layers_and_unknown_hub_models(tmp_path):
    tiers = "tiers=[{share: 1/2, layers: 6}, {share: 1/2, layers: 13}]"
    result = runner.invoke(app, ["run", "configs/paper/cifar100-iid.yaml", "--dry-run", "--set", tiers])
    assert result.exit_code == 2 and "tiers.1.layers" in result.output and "at most 12" in result.output
    result = runner.invoke(
        app, ["run", "configs/paper/ledgar.yaml", "--dry-run", "--set", "model.name_or_path=someone/unknown-model"]
    )
    assert result.exit_code == 2 and "model.name_or_path" in result.output


def test_dry_run_checks_the_plan_before_it_prints_the_config():
    """An invalid plan is one line, not the last line after a page of YAML (issue 23, item 8); a valid one prints
    the resolved config, then the plan."""
    tiers = "tiers=[{share: 1/2, layers: 6}, {share: 1/2, layers: 13}]"
    result = runner.invoke(app, ["run", "configs/paper/cifar100-iid.yaml", "--dry-run", "--set", tiers])
    assert result.exit_code == 2 and result.stdout == "", result.stdout
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "error: config field 'tiers.1.layers': 13 is more than the model's 12 layers (fix: use at most 12)"
    ]
    valid = runner.invoke(app, ["run", "configs/paper/cifar100-iid.yaml", "--dry-run"])
    assert valid.exit_code == 0 and valid.stdout.index("name: ") < valid.stdout.index("plan (computed without")


def test_dry_run_reads_local_data_as_the_run_does(tmp_path):
    """A local data file is read by the dry run with the run's source: its classes and rows are in the plan, and a
    wrong column is the run's one line (exit 2) before any run folder exists, not after it (the first hour)."""
    rows = ["review,stars"] + [f"{'good' if i % 2 else 'bad'} thing {i},{5 if i % 2 else 1}" for i in range(40)]
    (tmp_path / "reviews.csv").write_text("\n".join(rows) + "\n")
    args = ["run", "configs/default.yaml", "--dry-run", "--set", "data.source=hf", "--set"]
    args += [f"data.path={tmp_path / 'reviews.csv'}", "--set", "data.text_column=review", "--set"]
    valid = runner.invoke(app, [*args, "data.label_column=stars"])
    assert valid.exit_code == 0, valid.output
    assert re.search(r"data: hf \(.*reviews\.csv\), 2 classes, \d+ train, \d+ test rows read", valid.stdout)
    wrong = runner.invoke(app, [*args, "data.label_column=rating"])
    assert wrong.exit_code == 2 and wrong.stdout == ""
    assert [line for line in wrong.stderr.splitlines() if line.strip()] == [
        f"error: config field 'data.label_column': column 'rating' not in '{tmp_path / 'reviews.csv'}' (its columns: "
        "review, stars) (fix: set data.label_column to the column of the labels)"
    ]
