"""`fedhello report`: every figure of a real tiny run, and robustness to what older or simpler runs lack."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import numpy as np
import yaml
from matplotlib.image import imread
from typer.testing import CliRunner

from fedhello.cli import app
from fedhello.figures import curves, layer_counts
from fedhello.reporting import write_report
from fedhello.rundir import load_run

runner = CliRunner()
ALWAYS = ["accuracy_loss", "layer_heatmap", "tier_layers", "communication", "train_seconds"]


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def assert_figures(report: Path, names: list[str], absent: list[str] = ()) -> None:
    """Each named PNG exists beside the page, is a real non-blank image and is embedded byte for byte."""
    page = report.read_text()
    embedded = embedded_pngs(page)
    for name in names:
        png = report.parent / f"{name}.png"
        assert png.exists(), f"{name}.png missing"
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
        pixels = imread(png)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400, name
        assert float(np.std(pixels[..., :3])) > 0.05, f"{name}.png is blank"
        assert data in embedded, f"{name}.png is not embedded in the page"
    for name in absent:
        assert not (report.parent / f"{name}.png").exists(), f"{name}.png should not be drawn"
    assert len(embedded) == len(list(report.parent.glob("*.png")))
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<link" not in page


def test_run_writes_report_of_tiny_run_with_every_figure(tiny_config, tmp_path):
    """`fedhello run` on the tiny model (2 rounds, local engine, FIM from round 2) ends with a complete report."""
    tree = tiny_config.model_dump(mode="json")
    tree["federation"]["rounds"] = 2
    tree["output"]["save_adapter"] = False
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tree))
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(config_path), "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = out / "report" / "report.html"
    assert f"report: {report}" in result.output.replace("\n", "")

    run = load_run(out)
    profiled = any("peak_mem_mb" in c for c in run.clients)  # another module may profile memory
    assert_figures(
        report,
        [*ALWAYS, "importance", "partition", *(["peak_memory"] if profiled else [])],
        absent=[] if profiled else ["peak_memory"],
    )
    page = report.read_text()
    assert "No FIM refresh" not in page and "No partition.json" not in page

    # partition.json agrees with the run: every client's tier, and counts that add up to its samples
    stats = json.loads((out / "partition.json").read_text())
    assert len(stats["clients"]) == tiny_config.federation.num_clients
    assert stats["label_names"] == ["money", "music", "sport", "tech"]
    for client in run.clients:
        entry = stats["clients"][client["id"]]
        assert entry["tier"] == client["tier"] and entry["num_samples"] == client["num_samples"]
    for entry in stats["clients"]:
        assert sum(entry["label_counts"]) == entry["num_samples"] > 0
        assert entry["budget"] == tiny_config.tiers[entry["tier"]].layers

    # the heatmap counts exactly the layer assignments of allocations.csv
    with (out / "allocations.csv").open() as f:
        rows = list(csv.DictReader(f))
    counts = layer_counts(run)
    assert counts.shape == (4, 2)
    for r, round_num in enumerate(run.rounds):
        expected = np.zeros(4, dtype=int)
        for row in rows:
            if int(row["round"]) == round_num:
                for layer in row["layers"].split():
                    expected[int(layer)] += 1
        assert counts[:, r].tolist() == expected.tolist()


def test_no_report_option_skips_it(tiny_config, tmp_path):
    tree = tiny_config.model_dump(mode="json")
    tree["federation"]["rounds"] = 1
    tree["output"]["save_adapter"] = False
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(tree))
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(config_path), "--out", str(out), "--no-progress", "--no-report"])
    assert result.exit_code == 0, result.output
    assert (out / "metrics.jsonl").exists() and not (out / "report").exists()
    assert "report:" not in result.output


def test_report_without_fim_partition_or_some_evaluations(make_run_dir):
    """An older gd run: no importance log, no partition.json, evaluated every 3rd round only."""
    run_dir = make_run_dir("old-gd", rounds=7, eval_every=3, fim_rounds=(), partition=False, strategy="gd")
    report = write_report([run_dir])
    assert report == run_dir / "report" / "report.html"
    assert_figures(report, ALWAYS, absent=["importance", "partition", "peak_memory"])
    page = report.read_text()
    assert "No FIM refresh in this run (gd" in page
    assert "No partition.json" in page and "not profiled" in page
    # the accuracy curve has exactly the evaluated rounds
    line = curves([load_run(run_dir)]).axes[0].lines[0]
    assert line.get_xdata().tolist() == [3, 6, 7]


def test_several_runs_are_overlaid_and_profiled_memory_shown(make_run_dir, tmp_path):
    first = make_run_dir("fim", seed=1, peak_mem=True)
    second = make_run_dir("gd", fim_rounds=(), strategy="gd", eval_every=2, seed=2, partition=False)
    result = runner.invoke(app, ["report", str(first), str(second), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    report = Path(result.output.strip().splitlines()[-1])
    assert report == tmp_path / "cmp" / "report.html"
    per_run = ["layer_heatmap", "tier_layers", "communication", "train_seconds"]
    assert_figures(
        report,
        [
            "accuracy_loss",
            "accuracy_vs_upload",
            *(f"run1-{n}" for n in [*per_run, "importance", "partition", "peak_memory"]),
            *(f"run2-{n}" for n in per_run),
        ],
        absent=["run2-importance", "run2-partition", "run2-peak_memory"],
    )
    assert "peak memory MB (max)" in report.read_text() and "median step s" in report.read_text()
    accuracy_axis = curves([load_run(first), load_run(second)]).axes[0]
    assert [line.get_label() for line in accuracy_axis.lines] == ["fim (fim+gd)", "gd (gd)"]


def test_report_of_missing_or_empty_folder_is_one_line_error(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no rounds in metrics.jsonl" in result.output


def test_torn_last_line_and_csv_only_allocations(make_run_dir):
    """A run killed mid-write, from a version whose metrics lacked per-client entries."""
    run_dir = make_run_dir("torn", rounds=3)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected = [sorted(c["layers"]) for r in records for c in r["clients"]]
    for record in records:
        del record["clients"]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"round": 4, "acc')
    run = load_run(run_dir)
    assert run.rounds == [1, 2, 3]
    assert [sorted(c["layers"]) for c in run.clients] == expected
    assert layer_counts(run).sum() == sum(len(layers) for layers in expected)


def test_a_causal_lm_report_names_its_metric(make_run_dir, tmp_path):
    """A causal LM's headline metric is ROUGE-L: the report's table and curves say so (issue 23, item 6)."""
    from fedhello.reporting.report import Page, accuracy_section, overview

    run_dir = make_run_dir("lm", rounds=2, fim_rounds=(), partition=False)
    (run_dir / "summary.json").write_text(json.dumps({"metric": "rouge_l", "final_rouge_l": 0.4}))
    page = Page(tmp_path)
    overview(page, [load_run(run_dir)])
    accuracy_section(page, [load_run(run_dir)])
    html = "".join(page.blocks)
    assert "<th>final rouge_l</th><th>best rouge_l</th>" in html and "Test rouge_l and loss" in html
    assert "final acc" not in html


def test_a_budget_tier_is_named_by_its_budget_not_the_layer_count_it_affords_with_activations_kept():
    from fedhello.rundir import tier_summary

    # a memory_fraction tier's resolved config carries the MiB and the kept-activations count; recomputing plans
    # train more layers than that count, so the budget is what limits the tier
    assert tier_summary({"layers": 2, "memory_mb": 39.6, "memory_fraction": 0.45}) == "<= 39.6 MiB"
    assert tier_summary({"layers": 6, "seconds_per_step": 0.38, "total_memory_mb": None}) == "<= 0.38 s/step"
    assert tier_summary({"layers": 3}) == "3 layers"
    assert tier_summary({"layers": 1}) == "1 layer"


def test_a_personalised_run_shows_its_per_client_local_test_scores(make_run_dir):
    """Records with `local_test` (federation.local_test) get the per-client figure and the summary table; a run
    without them gets neither."""
    from fedhello.server.local_test import spread

    run_dir = make_run_dir("personal", rounds=3)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        ids = [c["id"] for c in record["clients"]]
        sizes = {c: 10.0 + c for c in ids}
        record["local_test"] = {
            "global": spread({c: 0.3 + 0.02 * c for c in ids}, sizes),
            "personal": spread({c: 0.6 + 0.05 * c + 0.03 * record["round"] for c in ids}, sizes),
        }
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report = write_report([run_dir])
    assert_figures(report, ["local_test"])
    page = report.read_text()
    assert "Personalised evaluation" in page and f"{records[-1]['local_test']['personal']['weighted_mean']:.4f}" in page
    other = write_report([make_run_dir("plain", rounds=2)])
    assert "Personalised evaluation" not in other.read_text() and not (other.parent / "local_test.png").exists()
