"""Summaries of a finished (or partly finished) grid: results.md, results.csv, cells.csv, accuracy curves and
the accuracy / weak-device-memory frontier.

The headline is the final accuracy (mean ± sample std over seeds); each method is compared with the reference
method by the per-seed paired difference and its 95 % t-interval, and called a tie when that interval
contains 0. See docs/compare.md for the protocol.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedhello import figures
from fedhello.compare.cells import CellResult, read_cell
from fedhello.compare.grid import Cell
from fedhello.compare.ratios import partition_ratios
from fedhello.compare.runner import GridRun
from fedhello.compare.stats import PairedDifference, mean_std, paired_difference
from fedhello.methods import METHODS
from fedhello.rundir import write_atomic

DASH = "–"  # a value the runs do not record


@dataclass
class Row:
    """One method on one partition, over its finished seeds."""

    partition: str
    method: str
    cells: list[CellResult]
    is_reference: bool = False
    delta: PairedDifference | None = None  # final accuracy minus the reference's, paired by seed

    @property
    def seeds(self) -> list[int]:
        return [c.seed for c in self.cells]

    def values(self, name: str) -> list[float]:
        """The cells' non-missing values of a CellResult field, in seed order."""
        return [v for c in self.cells if (v := getattr(c, name)) is not None]

    def mean(self, name: str) -> float | None:
        values = self.values(name)
        return float(np.mean(values)) if values else None

    @property
    def curves(self) -> list[list[tuple[int, float]]]:
        return [c.curve for c in self.cells]

    def as_csv(self) -> dict[str, Any]:
        out: dict[str, Any] = {"partition": self.partition, "method": self.method}
        out["seeds"] = " ".join(str(s) for s in self.seeds)
        for name, column in (("final", "final"), ("last_k_mean", "last_k"), ("macro_f1", "macro_f1"),
                             ("best", "best")):
            values = self.values(name)
            mean, std = mean_std(values) if values else (None, None)
            out[f"{column}_mean"], out[f"{column}_std"] = mean, std
        d = self.delta
        out.update(
            delta_final_mean=d.mean if d else None,
            delta_final_low=d.interval[0] if d and d.interval else None,
            delta_final_high=d.interval[1] if d and d.interval else None,
            tie=d.tie if d else None,
            paired_seeds=d.n if d else None,
            unmatched_seeds=d.unmatched if d else None,
            weak_mem_ratio=self.mean("weak_mem_ratio"),
            weak_step_ratio=self.mean("weak_step_ratio"),
            upload_mb_per_round=self.mean("upload_mb_per_round"),
            train_s_per_round=self.mean("train_s_per_round"),
        )
        return out


def _with_ratios(results: list[tuple[CellResult, Any]]) -> list[CellResult]:
    """Fill in each cell's weak-tier ratios, whose reference is per partition."""
    for partition in dict.fromkeys(r.partition for r, _ in results):
        members = [(r, res) for r, res in results if r.partition == partition]
        for (result, _), ratios in zip(members, partition_ratios([res for _, res in members]), strict=True):
            result.weak_mem_ratio, result.weak_step_ratio = ratios.memory, ratios.step
    return [r for r, _ in results]


def collect(cells: Sequence[Cell], reference: str = "fedit", last_k: int = 3) -> list[Row]:
    """Rows per (partition, method) in grid order from the finished cells (unfinished ones are left out),
    with the paired difference of every method's final accuracy to `reference` on the same partition."""
    results = _with_ratios([read_cell(cell, last_k) for cell in cells if cell.done])
    groups: dict[tuple[str, str], list[CellResult]] = {}
    for result in results:
        groups.setdefault((result.partition, result.method), []).append(result)
    rows = [Row(p, m, members, is_reference=m == reference) for (p, m), members in groups.items()]
    for row in rows:
        ref = groups.get((row.partition, reference))
        if ref is not None and not row.is_reference:
            row.delta = paired_difference(
                {c.seed: c.final for c in row.cells if c.final is not None},
                {c.seed: c.final for c in ref if c.final is not None},
            )
    return rows


def _pct(values: list[float]) -> str:
    """Mean ± sample std in % (the mean alone for one value; a dash for none)."""
    if not values:
        return DASH
    mean, std = mean_std(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"


def _ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def format_delta(delta: PairedDifference | None, is_reference: bool = False) -> str:
    """'+1.2 [+0.3, +2.1]' in points; '**tie** ...' when the interval contains 0; '[n/a]' for one pair."""
    if is_reference:
        return "reference"
    if delta is None:
        return DASH
    mean = f"{100 * delta.mean:+.1f}"
    if delta.interval is None:
        return f"{mean} [n/a]"
    low, high = (100 * v for v in delta.interval)
    text = f"{mean} [{low:+.1f}, {high:+.1f}]"
    return f"**tie** {text}" if delta.tie else text


def _wall_line(rows: list[Row], run: GridRun | None, elapsed_seconds: float | None) -> str:
    cells = [c for r in rows for c in r.cells]
    line = f"Wall time: the {len(cells)} finished cells' runs took {sum(c.wall_seconds for c in cells):.0f} s " \
           "(sum of their rounds' wall time, set-up excluded)"
    if elapsed_seconds is not None:
        line += f"; this invocation took {elapsed_seconds:.0f} s"
        if run is not None:
            line += f" and ran {run.ran} cells with {run.workers} worker{'s' if run.workers > 1 else ''}"
            if run.failed:
                line += f" ({len(run.failed)} failed)"
    return line + ".\n\n"


def _table(part: list[Row], reference: str, last_k: int) -> str:
    out = io.StringIO()
    top = max((m for r in part if (m := r.mean("final")) is not None), default=None)
    out.write(
        f"| method | final acc | last-{last_k} acc | macro-F1 | Δ final vs {reference} [95 % CI] "
        "| weak-tier memory | weak-tier step time | upload MB/round | seeds |\n"
    )
    out.write("|---|---|---|---|---|---|---|---|---|\n")
    for r in part:
        final = _pct(r.values("final"))
        final = f"**{final}**" if top is not None and r.mean("final") == top else final
        out.write(
            f"| {r.method} | {final} | {_pct(r.values('last_k_mean'))} | {_pct(r.values('macro_f1'))} "
            f"| {format_delta(r.delta, r.is_reference)} | {_ratio(r.mean('weak_mem_ratio'))} "
            f"| {_ratio(r.mean('weak_step_ratio'))} | {r.mean('upload_mb_per_round') or 0.0:.2f} | {len(r.seeds)} |\n"
        )
    unmatched = sum(r.delta.unmatched for r in part if r.delta)
    out.write(
        f"\nΔ = method − {reference} on the same seed (same partitions, tiers and client sampling), mean in points "
        "with its 95 % t-interval over the paired seeds; **tie**: the interval contains 0, so these seeds cannot "
        f"tell the method from {reference}; n/a: one paired seed gives no interval"
        + (f"; {unmatched} unpaired seed{'s' if unmatched > 1 else ''} left out" if unmatched else "")
        + ".\n"
    )
    return out.getvalue()


def results_markdown(
    rows: list[Row],
    command: str = "",
    reference: str = "fedit",
    last_k: int = 3,
    run: GridRun | None = None,
    elapsed_seconds: float | None = None,
) -> str:
    """One table per partition; the best final-accuracy mean is bold."""
    out = io.StringIO()
    out.write("# fedhello compare: results\n\n")
    out.write(_wall_line(rows, run, elapsed_seconds))
    if command:
        out.write(f"Command: `{command}`\n\n")
    out.write(
        "Headline: final accuracy in % (the last round, evaluated on the whole test split), mean ± sample std "
        f"over seeds. last-{last_k} acc: mean of the last {last_k} evaluations; macro-F1: final round "
        f"({DASH} when the task does not record it). Weak-tier memory / step time: the weak tiers' median peak "
        "training memory / step time (worst weak tier) over the median of full-rank all-layer clients on this "
        f"partition ({DASH} without `train.record_resources: true`). upload: MB sent by a round's clients.\n"
    )
    for partition in dict.fromkeys(r.partition for r in rows):
        out.write(f"\n## {partition}\n\n")
        out.write(_table([r for r in rows if r.partition == partition], reference, last_k))
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


def plot_frontier(rows: list[Row], partition: str, path: Path) -> Path | None:
    """Final accuracy (mean ± std) against the weak-tier memory ratio, one labelled point per method, and a
    dashed line at the reference's mean. None (no file) when no method has a memory ratio."""
    part = [r for r in rows if r.partition == partition and r.values("final")]
    points = {
        r.method: (r.mean("weak_mem_ratio"), *(100 * v for v in mean_std(r.values("final"))))
        for r in part
        if r.mean("weak_mem_ratio") is not None
    }
    if not points:
        return None
    reference = next(((r.method, 100 * mean_std(r.values("final"))[0]) for r in part if r.is_reference), None)
    return figures.save_png(figures.frontier(points, reference, partition), path)


def _csv(rows: list[dict[str, Any]], fields: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_results(
    cells: list[Cell],
    root: Path,
    command: str = "",
    reference: str = "fedit",
    last_k: int = 3,
    run: GridRun | None = None,
    elapsed_seconds: float | None = None,
) -> dict[str, Path]:
    """Write results.md, results.csv, cells.csv, accuracy_<partition>.png and frontier_<partition>.png (when
    the cells recorded resources) under `root`; return their paths."""
    rows = collect(cells, reference, last_k)
    root.mkdir(parents=True, exist_ok=True)
    paths = {"md": root / "results.md", "csv": root / "results.csv", "cells": root / "cells.csv"}
    write_atomic(paths["md"], results_markdown(rows, command, reference, last_k, run, elapsed_seconds))
    row_fields = list(Row("", "", []).as_csv())
    write_atomic(paths["csv"], _csv([r.as_csv() for r in rows], row_fields))
    cell_fields = list(CellResult("", "", 0, None, None, None, None, 0.0, 0.0, 0.0).as_csv())
    write_atomic(paths["cells"], _csv([c.as_csv() for r in rows for c in r.cells], cell_fields))
    for partition in dict.fromkeys(r.partition for r in rows):
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in partition)
        paths[f"png:{partition}"] = plot_curves(rows, partition, root / f"accuracy_{safe}.png")
        frontier = plot_frontier(rows, partition, root / f"frontier_{safe}.png")
        if frontier is not None:
            paths[f"frontier:{partition}"] = frontier
    return paths
