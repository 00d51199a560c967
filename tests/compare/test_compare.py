"""`fedhello compare` end to end on the tiny model: grid, shared set-up, resume, table, csv and plots."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fedhello.cli import app
from fedhello.compare import load_grid
from fedhello.methods import METHODS

runner = CliRunner()


def tiny_overrides(tiny_model_dir, tiny_data_dir):
    return [
        "--set", f"model.name_or_path={tiny_model_dir}",
        "--set", "data.source=hf",
        "--set", f"data.path={tiny_data_dir}",
        "--set", "data.max_test_samples=60",
        "--set", "data.max_train_samples=200",
    ]


def accuracy_curve(run_dir):
    """Test accuracy of every evaluated round of a run folder, from its metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["accuracy"] for r in records if r["accuracy"] is not None]


def read_csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_compare_grid_table_plots_and_resume(tiny_model_dir, tiny_data_dir, tmp_path):
    out = tmp_path / "grid"
    args = ["compare", "configs/compare/ci.yaml", "--out", str(out), "--no-progress",
            *tiny_overrides(tiny_model_dir, tiny_data_dir),
            "--set", "compare.methods=[fedit, hetlora]", "--set", "compare.seeds=[1, 2]", "--set", "compare.workers=1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "ran 8 cells" in result.output

    rows = read_csv(out / "results.csv")
    assert {(r["partition"], r["method"]) for r in rows} == {(p, m) for p in ("iid", "dir0.5")
                                                             for m in ("fedit", "hetlora")}
    for row in rows:
        assert row["seeds"] == "1 2"
        # the table's numbers are those of the cells' own metrics (best and last evaluated accuracy, seed mean)
        curves = [accuracy_curve(out / row["partition"] / row["method"] / f"seed{seed}") for seed in (1, 2)]
        assert float(row["best_mean"]) == pytest.approx(np.mean([max(c) for c in curves]), abs=1e-6)
        assert float(row["final_mean"]) == pytest.approx(np.mean([c[-1] for c in curves]), abs=1e-6)
        assert float(row["upload_mb_per_round"]) > 0 and float(row["train_s_per_round"]) > 0
    by = {(r["partition"], r["method"]): r for r in rows}
    # HetLoRA's weaker tiers upload truncated factors: less than FedIT's full-rank adapters
    assert float(by["iid", "hetlora"]["upload_mb_per_round"]) < float(by["iid", "fedit"]["upload_mb_per_round"])
    table = (out / "results.md").read_text()
    assert "## iid" in table and "## dir0.5" in table and "±" in table and "| hetlora |" in table
    for partition in ("iid", "dir0.5"):
        assert (out / f"accuracy_{partition}.png").stat().st_size > 1000

    # every method of a (partition, seed) sees the same clients in every round, and a different seed differs
    def sampled(method, seed):
        rows = read_csv(out / "dir0.5" / method / f"seed{seed}" / "allocations.csv")
        return [(r["round"], r["client"]) for r in rows]

    assert sampled("fedit", 1) == sampled("hetlora", 1) and sampled("fedit", 1) != sampled("fedit", 2)

    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "ran 0 cells, kept 8" in again.output
    assert (out / "results.md").read_text().split("Command:")[1:] == table.split("Command:")[1:]

    # a cell finished under other settings is stale: it is not kept
    cells = load_grid("configs/compare/ci.yaml", [a for a in args[6:] if a != "--set"] + ["federation.rounds=3"],
                      out)
    assert not any(c.done for c in cells)


def test_every_method_runs_a_round_with_all_updates_accepted(tiny_model_dir, tiny_data_dir, tmp_path):
    out = tmp_path / "all"
    methods = ", ".join(METHODS)
    result = runner.invoke(app, [
        "compare", "configs/compare/ci.yaml", "--out", str(out), "--no-progress",
        *tiny_overrides(tiny_model_dir, tiny_data_dir),
        "--set", f"compare.methods=[{methods}]", "--set", "compare.partitions={iid: {kind: iid}}",
        "--set", "federation.rounds=1", "--set", "federation.clients_per_round=6", "--set", "compare.workers=1",
    ])
    assert result.exit_code == 0, result.output
    rows = {r["method"]: r for r in read_csv(out / "results.csv")}
    assert set(rows) == set(METHODS)
    for name in METHODS:
        folder = "all-partitions" if METHODS.get(name).partition_free else "iid"
        summary = json.loads((out / folder / name / "seed1" / "summary.json").read_text())
        assert summary["rejected_updates"] == 0, name
    record = {m: json.loads((out / "iid" / m / "seed1" / "metrics.jsonl").read_text().splitlines()[0])
              for m in ("fedit", "exclusive", "ffa-lora", "straggler")}
    assert len(record["fedit"]["clients"]) == 6
    assert len(record["exclusive"]["clients"]) == 2  # only the strongest third of 6 clients trains
    upload = {m: float(rows[m]["upload_mb_per_round"]) for m in rows}
    assert upload["ffa-lora"] < upload["fedit"] and upload["straggler"] < upload["fedit"]
    assert upload["hetlora"] < upload["fedit"] and upload["legend"] < upload["fedit"]


def test_compare_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("compare: {methods: [nope], partitions: {iid: {kind: iid}}}\n")
    result = runner.invoke(app, ["compare", str(bad)])
    assert result.exit_code == 2 and "unknown method 'nope'" in result.output
    bad.write_text("federation: {rounds: 2}\n")
    result = runner.invoke(app, ["compare", str(bad)])
    assert result.exit_code == 2 and "compare" in result.output
    listed = runner.invoke(app, ["compare", "--list"])
    assert listed.exit_code == 0 and all(name in listed.output for name in METHODS)


def test_the_centralized_reference_runs_once_per_seed_for_every_partition(tiny_model_dir, tiny_data_dir, tmp_path):
    out = tmp_path / "central"
    result = runner.invoke(app, [
        "compare", "configs/compare/ci.yaml", "--out", str(out), "--no-progress",
        *tiny_overrides(tiny_model_dir, tiny_data_dir),
        "--set", "compare.methods=[fedit, centralized]", "--set", "federation.rounds=1",
        "--set", "train.max_steps=1", "--set", "compare.workers=1",
        "--set", "compare.partitions={iid: {kind: iid}, path-1: {kind: pathological, classes_per_client: 1}}",
    ])
    assert result.exit_code == 0, result.output
    assert "ran 3 cells" in (out / "results.md").read_text()  # fedit twice, centralized once
    assert [p.parent.parent.parent.name for p in out.glob("*/centralized/seed1/summary.json")] == ["all-partitions"]
    rows = read_csv(out / "results.csv")
    central = [r for r in rows if r["method"] == "centralized"]
    assert [r["partition"] for r in central] == ["iid", "path-1"]
    assert central[0]["final_mean"] == central[1]["final_mean"]
