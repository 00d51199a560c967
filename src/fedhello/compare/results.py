"""Summaries of a finished (or partly finished) grid: results.md, results.csv and accuracy plots."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedhello import figures
from fedhello.compare.grid import Cell
from fedhello.methods import METHODS
from fedhello.rundir import load_run, write_atomic


@dataclass
class Row:
    """One method on one partition, aggregated over its finished seeds."""

    partition: str
    method: str
    seeds: list[int]
    best: list[float]
    final: list[float]
    upload_mb_per_round: float
    train_s_per_round: float
    curves: list[list[tuple[int, float]]]

    def as_csv(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "method": self.method,
            "seeds": " ".join(str(s) for s in self.seeds),
            "best_mean": float(np.mean(self.best)),
            "best_std": _std(self.best),
            "final_mean": float(np.mean(self.final)),
            "final_std": _std(self.final),
            "upload_mb_per_round": self.upload_mb_per_round,
            "train_s_per_round": self.train_s_per_round,
        }


def _std(values: list[float]) -> float:
    """Sample standard deviation over seeds (0 for a single seed)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def collect(cells: list[Cell]) -> list[Row]:
    """Aggregate the finished cells per (partition, method), in grid order; unfinished cells are left out."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        if cell.done:
            groups.setdefault((cell.partition, cell.method), []).append(cell)
    rows = []
    for (partition, method), members in groups.items():
        best, final, upload, train, curves = [], [], [], [], []
        for cell in members:
            run = load_run(cell.run_dir)
            summary, records = run.summary or {}, run.metrics
            best.append(summary["best_accuracy"])
            final.append(summary["final_accuracy"])
            upload.append(np.mean([r["bytes_up"] for r in records]) / 1e6)
            train.append(np.mean([r["train_seconds"] for r in records]))
            curves.append([(r["round"], r["accuracy"]) for r in records if r.get("accuracy") is not None])
        rows.append(
            Row(partition, method, [c.seed for c in members], best, final, float(np.mean(upload)),
                float(np.mean(train)), curves)
        )
    return rows


def _pm(values: list[float]) -> str:
    text = f"{100 * np.mean(values):.1f}"
    return f"{text} ± {100 * _std(values):.1f}" if len(values) > 1 else text


def results_markdown(rows: list[Row], command: str = "") -> str:
    """One table per partition; the best mean in each accuracy column is bold."""
    out = io.StringIO()
    out.write("# fedhello compare: results\n\n")
    if command:
        out.write(f"Command: `{command}`\n\n")
    out.write(
        "Accuracy in % on the test split (mean ± sample std over seeds when there are several); upload = MB sent "
        "by the round's clients per round; train s = summed client training seconds per round.\n"
    )
    for partition in dict.fromkeys(r.partition for r in rows):
        part = [r for r in rows if r.partition == partition]
        top_best = max(np.mean(r.best) for r in part)
        top_final = max(np.mean(r.final) for r in part)
        out.write(f"\n## {partition}\n\n")
        out.write("| method | best acc | final acc | upload MB/round | train s/round | seeds |\n")
        out.write("|---|---|---|---|---|---|\n")
        for r in part:
            best = _pm(r.best)
            final = _pm(r.final)
            best = f"**{best}**" if np.mean(r.best) == top_best else best
            final = f"**{final}**" if np.mean(r.final) == top_final else final
            out.write(
                f"| {r.method} | {best} | {final} | {r.upload_mb_per_round:.2f} | {r.train_s_per_round:.1f} "
                f"| {len(r.seeds)} |\n"
            )
    out.write("\nMethods:\n\n")
    for name in dict.fromkeys(r.method for r in rows):
        out.write(f"- `{name}`: {METHODS.get(name).summary}\n")
    return out.getvalue()


def plot_curves(rows: list[Row], partition: str, path: Path) -> Path:
    """Test accuracy per round for every method on one partition (mean over seeds)."""
    lines = {}
    for r in (r for r in rows if r.partition == partition):
        rounds = sorted({x for curve in r.curves for x, _ in curve})
        mean = [float(np.mean([acc for curve in r.curves for x, acc in curve if x == rnd])) for rnd in rounds]
        lines[r.method] = (rounds, mean)
    return figures.save_png(figures.accuracy_lines(lines, title=partition, size=(7, 4)), path)


def write_results(cells: list[Cell], root: Path, command: str = "") -> dict[str, Path]:
    """Write results.md, results.csv and accuracy_<partition>.png under `root`; return their paths."""
    rows = collect(cells)
    root.mkdir(parents=True, exist_ok=True)
    paths = {"md": root / "results.md", "csv": root / "results.csv"}
    write_atomic(paths["md"], results_markdown(rows, command))
    buffer = io.StringIO()
    fields = list(Row("", "", [], [0.0], [0.0], 0.0, 0.0, []).as_csv())
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for r in rows:
        writer.writerow(r.as_csv())
    write_atomic(paths["csv"], buffer.getvalue())
    for partition in dict.fromkeys(r.partition for r in rows):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in partition)
        paths[f"png:{partition}"] = plot_curves(rows, partition, root / f"accuracy_{safe}.png")
    return paths
