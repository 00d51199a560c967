"""A path that looks local is never asked of the hub: a mistyped one is "not found" at once, naming the field
and the path; hub ids stay hub ids (issue 23, item 2). No test here touches the network."""

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fedhello.cli import app
from fedhello.paths import looks_local

HUB_IDS = [
    "sentence-transformers/all-MiniLM-L6-v2",
    "bert-base-uncased",
    "openai-community/gpt2",
    "Qwen/Qwen2.5-0.5B",
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T",
    "databricks/databricks-dolly-15k",
    "coastalcph/lex_glue",
]
LOCAL = ["./model", "../data/x", "/srv/models/bert", "~/models/bert", "data/nope.csv", "nope.jsonl", "a/b/c"]


@pytest.mark.parametrize("name", HUB_IDS)
def test_hub_ids_stay_hub_names(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_local(name)


@pytest.mark.parametrize("name", LOCAL)
def test_paths_that_can_only_be_local(name):
    assert looks_local(name)


def test_an_existing_parent_folder_makes_a_name_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not looks_local("models/nope")
    (tmp_path / "models").mkdir()
    assert looks_local("models/nope")


@pytest.fixture
def user_folder(tiny_config, tmp_path, monkeypatch):
    """A user's working folder: a config of the tiny model and data, and a models/ folder beside it."""
    (tmp_path / "models").mkdir()
    tree = tiny_config.model_dump(mode="json")
    tree["output"].update(plot=False, save_adapter=False)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tree))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # should anything still ask the hub, it must not wait for it
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.name_or_path=models/nope", "error: config field 'model.name_or_path': model folder 'models/nope' not "
         "found (looked for {cwd}/models/nope) (fix: check the path (relative paths start from the current folder), "
         "or give a hub name such as owner/name)"),
        ("data.path=data/nope.csv", "error: config field 'data.path': data file or folder 'data/nope.csv' not found "
         "(looked for {cwd}/data/nope.csv) (fix: check the path (relative paths start from the current folder), or "
         "give a hub name such as owner/name)"),
    ],
)
@pytest.mark.parametrize("dry_run", [False, True])
def test_a_mistyped_local_path_is_not_found_at_once(override, message, dry_run, user_folder):
    args = ["run", "run.yaml", "--set", override, "--no-progress", "--no-report", "--out", "out"]
    result = CliRunner().invoke(app, [*args, "--dry-run"] if dry_run else args)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("run folder:")]
    assert result.exit_code == 2, result.output
    assert lines == [message.format(cwd=Path.cwd())], lines
