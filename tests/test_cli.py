"""The command line as a user runs it: one-line errors, dry runs, a real tiny run."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from fedhello.cli import app

runner = CliRunner()


def test_dry_run_prints_resolved_config():
    result = runner.invoke(app, ["run", "configs/default.yaml", "--dry-run", "--set", "federation.rounds=3"])
    assert result.exit_code == 0, result.output
    assert "rounds: 3" in result.output and "name: fill" in result.output and "recompute: true" in result.output


def test_bad_config_is_one_line_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("strategy: {name: fim+gd, fim_every: 0}\n")
    proc = subprocess.run([sys.executable, "-m", "fedhello.cli", "run", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "strategy.fim_every" in lines[0] and "Traceback" not in proc.stderr


def test_unknown_strategy_and_too_many_layers(tiny_config, tmp_path):
    import yaml

    tree = tiny_config.model_dump(mode="json")
    tree["strategy"]["name"] = "magic"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    result = runner.invoke(app, ["run", str(path), "--no-progress"])
    assert result.exit_code == 2 and "strategy.name" in result.output and "fim+gd" in result.output
    tree["strategy"] = {"name": "gd"}
    tree["tiers"][2]["layers"] = 9
    path.write_text(yaml.safe_dump(tree))
    result = runner.invoke(app, ["run", str(path), "--no-progress"])
    assert result.exit_code == 2 and "tiers.2.layers" in result.output and "at most 4" in result.output


def test_cli_run_writes_run_folder(tiny_config, tmp_path):
    import yaml

    tree = tiny_config.model_dump(mode="json")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(path), "--out", str(out), "--no-progress", "--set", "federation.rounds=1"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["rounds"] == 1
    assert (out / "adapter" / "adapter_config.json").exists()


def test_a_strategy_that_ignores_budgets_says_so(tiny_config, tmp_path):
    import yaml

    tree = tiny_config.model_dump(mode="json")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    for strategy, says in (("ffa", True), ("full", True), ("gd", False)):
        result = runner.invoke(app, ["run", str(path), "--dry-run", "--set", f"strategy.name={strategy}"])
        assert result.exit_code == 0, result.output
        assert ("ignores the tier budgets" in result.stderr) == says, (strategy, result.stderr)
    listing = runner.invoke(app, ["strategies"]).output
    assert "ignore the tier budgets, every client trains every layer: fedsa, ffa, full, pfedlora" in listing


def test_ci_runs_exactly_the_readme_test_command():
    """What .ci/run runs is the README's test command, so a green CI means the documented command passes; that
    command installs the report's browser (`install.sh --dev`), and CI is set so that the browser test fails
    rather than skips without it."""
    from pathlib import Path

    readme = Path("README.md").read_text()
    command = "bash scripts/install.sh --dev && .venv/bin/python -m pytest -q"
    assert f"```bash\n{command}\n```" in readme
    lines = [line for line in Path(".ci/run").read_text().splitlines() if line.strip()]
    assert lines[-1] == command
    assert 'export CI="${CI:-1}"' in lines
    install = Path("scripts/install.sh").read_text()
    assert "apt-get install" in install and "install_chromium" in install.split('= "--dev"', 1)[1]
