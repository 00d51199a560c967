"""The parallel cell runner: the same numbers as the sequential path, grid order, failures that do not stop
the grid; `fedhello compare` end to end with two workers."""

import csv
import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fedhello.cli import app
from fedhello.compare import load_compare, load_grid, run_grid
from fedhello.compare.runner import resolve_workers
from fedhello.engines.local import LocalEngine
from fedhello.errors import ConfigError

runner = CliRunner()


def grid_args(tiny_model_dir, tiny_data_dir):
    """A 4-cell grid (2 methods x 2 seeds, one partition) on the tiny model, with resources and adapters."""
    return [
        f"model.name_or_path={tiny_model_dir}",
        "data.source=hf",
        f"data.path={tiny_data_dir}",
        "data.max_test_samples=60",
        "data.max_train_samples=120",
        "train.record_resources=true",
        "output.save_adapter=true",
        "compare.methods=[fedit, fed-hello]",
        "compare.partitions={iid: {kind: iid}}",
        "compare.seeds=[1, 2]",
    ]


def accuracies(run_dir):
    return [json.loads(line)["accuracy"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_workers_match_one_worker_and_the_cli_writes_the_new_outputs(tiny_model_dir, tiny_data_dir, tmp_path):
    args = grid_args(tiny_model_dir, tiny_data_dir)
    sequential = load_grid("configs/compare/ci.yaml", args, tmp_path / "seq")
    run = run_grid(sequential, show_progress=False, workers=1)
    assert (run.ran, run.workers, run.failed) == (4, 1, [])

    cli_args = ["compare", "configs/compare/ci.yaml", "--out", str(tmp_path / "par"), "--no-progress"]
    for text in [*args, "compare.workers=2"]:
        cli_args += ["--set", text]
    result = runner.invoke(app, cli_args)
    assert result.exit_code == 0, result.output
    assert "ran 4 cells, kept 0 finished ones (2 workers)" in result.output

    parallel = load_grid("configs/compare/ci.yaml", [*args, "compare.workers=2"], tmp_path / "par")
    assert all(c.done for c in parallel)
    for seq, par in zip(sequential, parallel, strict=True):
        assert seq.label == par.label
        seq_summary = json.loads((seq.run_dir / "summary.json").read_text())
        par_summary = json.loads((par.run_dir / "summary.json").read_text())
        assert seq_summary["final_accuracy"] == par_summary["final_accuracy"], seq.label
        assert accuracies(seq.run_dir) == accuracies(par.run_dir), seq.label
        assert (seq.run_dir / "allocations.csv").read_text() == (par.run_dir / "allocations.csv").read_text()
        seq_adapter = load_file(seq.run_dir / "adapter" / "adapter_model.safetensors")
        par_adapter = load_file(par.run_dir / "adapter" / "adapter_model.safetensors")
        assert seq_adapter.keys() == par_adapter.keys()
        assert all(torch.equal(seq_adapter[k], par_adapter[k]) for k in seq_adapter), seq.label

    out = tmp_path / "par"
    table = (out / "results.md").read_text()
    assert "| macro-F1 | Δ final vs fedit [95 % CI] | rounds to 95 % | MB until | weakest tier T0 (1 layer)" in table
    assert "| fedit |" in table and "reference" in table and "with 2 workers" in table
    fed_hello = next(line for line in table.splitlines() if line.startswith("| fed-hello |"))
    assert "[" in fed_hello and "| 2 |" in fed_hello  # a paired difference over 2 seeds
    with (out / "cells.csv").open() as f:
        cells = list(csv.DictReader(f))
    assert [(c["method"], c["seed"]) for c in cells] == [
        ("fedit", "1"),
        ("fedit", "2"),
        ("fed-hello", "1"),
        ("fed-hello", "2"),
    ]
    # recorded resources give every cell ratios (on the tiny model its memory is noise, so only their presence)
    assert all(float(c["weak_mem_ratio"]) >= 0 and float(c["weak_step_ratio"]) > 0 for c in cells)
    assert all(float(c["worst_mem_ratio"]) >= float(c["weak_mem_ratio"]) for c in cells)  # largest >= median
    assert all(int(c["tier0_plans"]) > 0 and c["tier1_plans"] != "" for c in cells)  # ci.yaml: 2 weak tiers
    assert all(float(c["wall_seconds"]) > 0 and c["macro_f1"] != "" for c in cells)
    assert (out / "frontier_iid.png").stat().st_size > 1000 and (out / "accuracy_iid.png").stat().st_size > 1000


def test_a_failing_cell_is_reported_and_the_others_go_on(tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch):
    original = LocalEngine.run

    def fails_for_seed_2(self, config, run_dir, **kwargs):
        if config.seed == 2:
            raise RuntimeError("simulated crash\nsecond line")
        return original(self, config, run_dir, **kwargs)

    monkeypatch.setattr(LocalEngine, "run", fails_for_seed_2)
    args = [a for a in grid_args(tiny_model_dir, tiny_data_dir) if not a.startswith("output.")]
    args = [*args, "compare.methods=[fedit]", "federation.rounds=1", "train.record_resources=false"]
    cli_args = ["compare", "configs/compare/ci.yaml", "--out", str(tmp_path), "--no-progress"]
    for text in [*args, "compare.workers=1"]:
        cli_args += ["--set", text]
    result = runner.invoke(app, cli_args)
    assert result.exit_code == 1, result.output
    assert "iid / fedit / seed 2: RuntimeError: simulated crash" in result.output
    assert "second line" not in result.output and "1 cells failed" in result.output
    assert "simulated crash" in (tmp_path / "iid" / "fedit" / "seed2" / "error.txt").read_text()
    assert (tmp_path / "iid" / "fedit" / "seed1" / "summary.json").exists()
    assert "| fedit |" in (tmp_path / "results.md").read_text()  # the finished cell is tabulated


def test_worker_count_and_reference_validation(tiny_model_dir, tiny_data_dir, monkeypatch):
    grid = load_compare("configs/compare/ci.yaml", grid_args(tiny_model_dir, tiny_data_dir))
    assert grid.spec.workers == 0 and grid.spec.last_k == 3 and grid.spec.reference == "fedit"
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert resolve_workers(0, grid.cells) == 4  # capped by the unfinished cells
    assert resolve_workers(3, grid.cells) == 3 and resolve_workers(0, grid.cells[:1]) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert resolve_workers(0, grid.cells) == 2
    args = [*grid_args(tiny_model_dir, tiny_data_dir), "compare.engine=flower-sim"]
    flower = load_grid("configs/compare/ci.yaml", args)
    assert resolve_workers(4, flower) == 1  # engines that start processes of their own run one cell at a time
    with pytest.raises(ConfigError, match="compare.reference") as err:
        load_grid("configs/compare/ci.yaml", ["compare.methods=[hetlora]"])
    assert "\n" not in str(err.value)
    result = runner.invoke(app, ["compare", "configs/compare/ci.yaml", "--set", "compare.reference=nope"])
    assert result.exit_code == 2 and "compare.reference" in result.output


def test_missing_budget_profiles_are_measured_alone_before_the_cells_and_cached_ones_not_at_all(
    tiny_model_dir, tiny_data_dir, tmp_path, monkeypatch
):
    from fedhello.compare import runner as runner_module
    from fedhello.compare.runner import CellOutcome, measure_profile, profiles_to_measure

    monkeypatch.setenv("FEDHELLO_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_pool(profiles, cells, workers, finished, measuring):
        calls.append(([cell.label for cell in profiles], [cell.label for _, cell in cells]))
        for index, _ in reversed(cells):  # completion order differs from grid order
            finished(index, CellOutcome(1.0, "boom" if index == 1 else None))

    monkeypatch.setattr(runner_module, "_run_in_pool", fake_pool)
    args = grid_args(tiny_model_dir, tiny_data_dir)
    run = run_grid(load_grid("configs/compare/ci.yaml", args, tmp_path / "a"), show_progress=False, workers=2)
    assert calls[0] == (
        [],
        ["iid / fedit / seed 1", "iid / fedit / seed 2", "iid / fed-hello / seed 1", "iid / fed-hello / seed 2"],
    )  # no budget tier: nothing to measure
    assert run.ran == 3 and [(cell.label, error) for cell, error in run.failed] == [("iid / fedit / seed 2", "boom")]

    # budget tiers: every cell starts at once (none runs alone); one profile per distinct profile key is
    # measured first: the methods' options (HetLoRA's rank scaling and pruning are strategy options) do not change
    # what is measured, so the three methods share one
    budget = [
        *args,
        "tiers=[{share: 1/2, memory_mb: 40}, {share: 1/2, layers: 4}]",
        "compare.methods=[fedit, hetlora, fed-hello]",
    ]
    cells = load_grid("configs/compare/ci.yaml", budget, tmp_path / "b")
    run_grid(cells, show_progress=False, workers=2)
    assert calls[1] == (["iid / fedit / seed 1"], [c.label for c in cells])

    # the cheap check names the very file the profiler caches: once measured, fedit's profile is not again
    assert [c.label for c in profiles_to_measure(cells)] == ["iid / fedit / seed 1"]
    measure_profile(cells[0].config)
    assert profiles_to_measure(cells) == []
    run_grid(cells, show_progress=False, workers=2)
    assert calls[2][0] == []
