"""Summaries of a finished (or partly finished) grid: results.md, results.csv, cells.csv, accuracy curves with
a band over seeds and the accuracy / weak-device-memory frontier.

The headline is the final accuracy (mean ± sample std over seeds); each method is compared with the reference
method by the per-seed paired difference and its 95 % t-interval, and called a tie when that interval
contains 0. How fast a method gets there: rounds (and uploaded MB) until 95 % of the reference's final
accuracy. What it asks of weak devices: per weak tier, its largest plan's memory and step time over the full
reference and how many plans broke the tier's budgets. See docs/compare.md for the protocol.
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
from fedhello.compare.cells import CellResult, read_cell, tier_csv, time_to_target
from fedhello.compare.grid import Cell, CompareSpec
from fedhello.compare.ratios import partition_ratios
from fedhello.compare.runner import GridRun
from fedhello.compare.stats import PairedDifference, mean_std, paired_difference, seeds_needed
from fedhello.methods import METHODS
from fedhello.rundir import write_atomic

DASH = "–"  # a value the runs do not record
TARGET_SHARE = 0.95  # "rounds to 95 %": the share of the reference's final accuracy a cell must reach
DEFAULT_TARGET_HALF_WIDTH: float = CompareSpec.model_fields["target_half_width"].default


@dataclass(frozen=True)
class TierSummary:
    """One weak tier's largest plans over a method's seeds: the largest ratios of any seed, plans summed."""

    memory: float | None
    step: float | None
    over_budget: int
    plans: int
    training_memory: float | None = None  # largest training memory (weights left out) / the reference's


@dataclass
class Row:
    """One method on one partition, over its finished seeds."""

    partition: str
    method: str
    cells: list[CellResult]
    is_reference: bool = False
    delta: PairedDifference | None = None  # final accuracy minus the reference's, paired by seed
    # personalised evaluation: the clients' own models on their local test splits (`CellResult.local_best`) minus the
    # reference's, paired by seed
    local_delta: PairedDifference | None = None

    @property
    def seeds(self) -> list[int]:
        return [c.seed for c in self.cells]

    def values(self, name: str) -> list[float]:
        """The cells' non-missing values of a CellResult field, in seed order."""
        return [v for c in self.cells if (v := getattr(c, name)) is not None]

    def mean(self, name: str) -> float | None:
        values = self.values(name)
        return float(np.mean(values)) if values else None

    def largest(self, name: str) -> float | None:
        """The largest of the cells' values (the worst case over seeds)."""
        return max(self.values(name), default=None)

    @property
    def never(self) -> int:
        """Seeds whose run never reached the target (seeds without a reference cell are not counted)."""
        return sum(c.target_reached is False for c in self.cells)

    @property
    def judged(self) -> int:
        """Seeds with a reference cell to take the target from."""
        return sum(c.target_reached is not None for c in self.cells)

    def tier(self, index: int) -> TierSummary | None:
        """Weak tier `index` over the seeds (None when it is weak in none of the cells)."""
        found = [t for c in self.cells if (t := c.tier(index)) is not None]
        if not found:
            return None
        return TierSummary(
            memory=max((t.memory for t in found if t.memory is not None), default=None),
            step=max((t.step for t in found if t.step is not None), default=None),
            over_budget=sum(t.over_budget for t in found),
            plans=sum(t.plans for t in found),
            training_memory=max((t.training_memory for t in found if t.training_memory is not None), default=None),
        )

    @property
    def curves(self) -> list[list[tuple[int, float]]]:
        return [c.curve for c in self.cells]

    def band(self) -> tuple[list[int], list[float], list[float]]:
        """Rounds, mean and sample std (0 for one seed) of the accuracy over the seeds that evaluated each
        round."""
        rounds = sorted({x for curve in self.curves for x, _ in curve})
        per_round = [[acc for curve in self.curves for x, acc in curve if x == rnd] for rnd in rounds]
        stats = [mean_std(values) for values in per_round]
        return rounds, [m for m, _ in stats], [s for _, s in stats]

    def as_csv(self, weak: Sequence[int] = (), target_half_width: float = DEFAULT_TARGET_HALF_WIDTH) -> dict[str, Any]:
        """Every number of the row; `weak`: the partition's weak tiers (one group of columns each)."""
        out: dict[str, Any] = {"partition": self.partition, "method": self.method}
        out["seeds"] = " ".join(str(s) for s in self.seeds)
        columns = (("final", "final"), ("last_k_mean", "last_k"), ("macro_f1", "macro_f1"), ("best", "best"))
        for name, column in (*columns, ("local_global", "local_global"), ("local_personal", "local_personal")):
            values = self.values(name)
            mean, std = mean_std(values) if values else (None, None)
            out[f"{column}_mean"], out[f"{column}_std"] = mean, std
        d = self.delta
        out.update(
            delta_final_mean=d.mean if d else None,
            delta_final_low=d.interval[0] if d and d.interval else None,
            delta_final_high=d.interval[1] if d and d.interval else None,
            delta_half_width=d.half_width if d else None,
            seeds_needed=needed_seeds(d, target_half_width),
            tie=d.tie if d else None,
            paired_seeds=d.n if d else None,
            unmatched_seeds=d.unmatched if d else None,
            rounds_to_target_mean=self.mean("target_round"),
            mb_to_target_mean=self.mean("target_mb"),
            target_never=self.never,
            target_judged=self.judged,
            weak_mem_ratio=self.mean("weak_mem_ratio"),
            weak_step_ratio=self.mean("weak_step_ratio"),
            worst_mem_ratio=self.largest("worst_mem_ratio"),
            worst_step_ratio=self.largest("worst_step_ratio"),
        )
        for index in weak:
            summary = self.tier(index)
            out.update(
                tier_csv(
                    index,
                    *(
                        (summary.memory, summary.step, summary.over_budget, summary.plans, summary.training_memory)
                        if summary
                        else (None,) * 5
                    ),
                )
            )
        out["upload_mb_per_round"] = self.mean("upload_mb_per_round")
        out["train_s_per_round"] = self.mean("train_s_per_round")
        return out


def needed_seeds(delta: PairedDifference | None, target_half_width: float) -> int | None:
    """Seeds the paired interval would need to be at most ±`target_half_width` wide, if the differences keep
    their spread; None when it already is (or there is no interval)."""
    if delta is None or delta.half_width is None or not delta.half_width > target_half_width:
        return None
    return seeds_needed(delta.std, target_half_width, delta.confidence)


def _with_ratios(results: list[tuple[CellResult, Any]]) -> list[CellResult]:
    """Fill in each cell's weak-tier ratios, whose reference is per partition."""
    for partition in dict.fromkeys(r.partition for r, _ in results):
        members = [(r, res) for r, res in results if r.partition == partition]
        for (result, _), ratios in zip(members, partition_ratios([res for _, res in members]), strict=True):
            result.weak_mem_ratio, result.weak_step_ratio = ratios.memory, ratios.step
            result.tiers = ratios.tiers
    return [r for r, _ in results]


def _with_targets(results: list[CellResult], reference: str) -> None:
    """Fill in each cell's rounds and MB until TARGET_SHARE of the reference's final accuracy on the same
    partition and seed."""
    finals = {(r.partition, r.seed): r.final for r in results if r.method == reference and r.final is not None}
    for result in results:
        final = finals.get((result.partition, result.seed))
        if final is None:
            continue
        result.target_round, result.target_mb = time_to_target(result.curve, result.uploads, TARGET_SHARE * final)
        result.target_reached = result.target_round is not None


def collect(cells: Sequence[Cell], reference: str = "fedit", last_k: int = 3) -> list[Row]:
    """Rows per (partition, method) in grid order from the finished cells (unfinished ones are left out),
    with the paired difference of every method's final accuracy to `reference` on the same partition."""
    results = _with_ratios([read_cell(cell, last_k) for cell in cells if cell.done])
    _with_targets(results, reference)
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
            mine = {c.seed: c.local_best for c in row.cells if c.local_best is not None}
            theirs = {c.seed: c.local_best for c in ref if c.local_best is not None}
            if mine and theirs:
                row.local_delta = paired_difference(mine, theirs)
    return rows


def weak_tier_labels(rows: Sequence[Row]) -> dict[int, str]:
    """The weak tiers of some rows (one partition), weakest first: tier index -> label."""
    found: dict[int, tuple[int, str]] = {}
    for tier in (t for r in rows for c in r.cells for t in c.tiers):
        found.setdefault(tier.tier, (tier.rank, tier.label))
    return {i: label for i, (_, label) in sorted(found.items(), key=lambda item: (item[1][0], item[0]))}


def _pct(values: list[float]) -> str:
    """Mean ± sample std in % (the mean alone for one value; a dash for none)."""
    if not values:
        return DASH
    mean, std = mean_std(values)
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if len(values) > 1 else f"{100 * mean:.1f}"


def _ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def format_tier(summary: TierSummary | None) -> str:
    """'1.31 / 1.05 / 3 of 12': largest plan's memory ratio / step ratio / plans over budget of all plans."""
    if summary is None:
        return DASH
    if not summary.plans:
        return "no plans"
    return f"{_ratio(summary.memory)} / {_ratio(summary.step)} / {summary.over_budget} of {summary.plans}"


def format_target(row: Row) -> tuple[str, str]:
    """Rounds until the target (mean over the seeds that reached it, and how many never did) and the MB
    uploaded until then."""
    if not row.judged:
        return DASH, DASH
    rounds, mb = row.mean("target_round"), row.mean("target_mb")
    never = f"{row.never}/{row.judged} never"
    if rounds is None:
        return f"never ({row.never}/{row.judged})", DASH
    text = f"{rounds:.1f}" + (f" ({never})" if row.never else "")
    return text, f"{mb:.2f}"


def format_delta(
    delta: PairedDifference | None, is_reference: bool = False, target_half_width: float | None = None
) -> str:
    """'+1.2 [+0.3, +2.1]' in points; '**tie** ...' when the interval contains 0; '[n/a]' for one pair;
    '**undetermined**' when the difference is not a number. With `target_half_width`, an interval wider than
    ± that gets '(±2.1: needs ~12 seeds)'."""
    if is_reference:
        return "reference"
    if delta is None:
        return DASH
    if delta.undetermined:
        return f"**undetermined** (a difference is not a number) over {delta.n} seed{'s' if delta.n > 1 else ''}"
    mean = f"{100 * delta.mean:+.1f}"
    if delta.interval is None:
        return f"{mean} [n/a]"
    low, high = (100 * v for v in delta.interval)
    text = f"{mean} [{low:+.1f}, {high:+.1f}]"
    text = f"**tie** {text}" if delta.tie else text
    if target_half_width is not None and delta.half_width is not None and delta.half_width > target_half_width:
        needed = needed_seeds(delta, target_half_width)
        estimate = f"needs ~{needed} seeds" if needed is not None else "needs > 10000 seeds"
        text += f" (±{100 * delta.half_width:.1f}: {estimate})"
    return text


def _wall_line(rows: list[Row], run: GridRun | None, elapsed_seconds: float | None) -> str:
    cells = [c for r in rows for c in r.cells]
    line = (
        f"Wall time: the {len(cells)} finished cells' runs took {sum(c.wall_seconds for c in cells):.0f} s "
        "(sum of their rounds' wall time, set-up excluded)"
    )
    if elapsed_seconds is not None:
        line += f"; this invocation took {elapsed_seconds:.0f} s"
        if run is not None:
            line += f" and ran {run.ran} cells with {run.workers} worker{'s' if run.workers > 1 else ''}"
            if run.failed:
                line += f" ({len(run.failed)} failed)"
    return line + ".\n\n"


def _table(part: list[Row], reference: str, last_k: int, target_half_width: float) -> str:
    out = io.StringIO()
    top = max((m for r in part if (m := r.mean("final")) is not None), default=None)
    labels = weak_tier_labels(part)
    weakest = next(iter(labels), None)
    tier_header = (
        f"weakest tier {labels[weakest]}: memory / step / over budget"
        if weakest is not None
        else "weak tier: memory / step / over budget"
    )
    out.write(
        f"| method | final acc | last-{last_k} acc | macro-F1 | Δ final vs {reference} [95 % CI] "
        f"| rounds to {100 * TARGET_SHARE:.0f} % | MB until | {tier_header} | upload MB/round | seeds |\n"
    )
    out.write("|---|---|---|---|---|---|---|---|---|---|\n")
    for r in part:
        final = _pct(r.values("final"))
        final = f"**{final}**" if top is not None and r.mean("final") == top else final
        rounds, mb = format_target(r)
        tier = format_tier(r.tier(weakest)) if weakest is not None else DASH
        out.write(
            f"| {r.method} | {final} | {_pct(r.values('last_k_mean'))} | {_pct(r.values('macro_f1'))} "
            f"| {format_delta(r.delta, r.is_reference, target_half_width)} | {rounds} | {mb} | {tier} "
            f"| {r.mean('upload_mb_per_round') or 0.0:.2f} | {len(r.seeds)} |\n"
        )
    unmatched = sum(r.delta.unmatched for r in part if r.delta)
    out.write(
        f"\nΔ = method − {reference} on the same seed (same partitions, tiers and client sampling), mean in points "
        "with its 95 % t-interval over the paired seeds; **tie**: the interval contains 0, so these seeds cannot "
        f"tell the method from {reference}; n/a: one paired seed gives no interval"
        + (f"; {unmatched} unpaired seed{'s' if unmatched > 1 else ''} left out" if unmatched else "")
        + f". An interval wider than ±{100 * target_half_width:.1f} points (`compare.target_half_width`) says "
        "how many seeds would narrow it that far if the differences keep their spread.\n"
    )
    if any(r.values("local_global") for r in part):
        out.write(_local_table(part, reference, target_half_width))
    if len(labels) > 1:
        out.write(
            "\nEvery weak tier, largest plan: memory ratio / step-time ratio / plans over budget of all plans.\n\n"
        )
        out.write("| method | " + " | ".join(labels.values()) + " |\n")
        out.write("|---|" + "---|" * len(labels) + "\n")
        for r in part:
            out.write(f"| {r.method} | " + " | ".join(format_tier(r.tier(i)) for i in labels) + " |\n")
    return out.getvalue()


def _local_table(part: list[Row], reference: str, target_half_width: float) -> str:
    """Personalised evaluation (`federation.local_test`): per method, the last evaluation's client scores on their
    own local test splits, weighted by split size, for the global model and the personalised models, and the
    clients' own models (personalised where the method has them) against the reference's, paired by seed."""
    out = io.StringIO()
    out.write(
        f"\nPersonalised evaluation (`federation.local_test`), last evaluated round, each client's local test split, "
        f"mean over clients weighted by split size; mean ± std over seeds:\n\n"
        f"| method | global model on local tests | personalised models | Δ own model vs {reference} [95 % CI] "
        "| seeds |\n|---|---|---|---|---|\n"
    )
    for r in part:
        out.write(
            f"| {r.method} | {_pct(r.values('local_global'))} | {_pct(r.values('local_personal'))} "
            f"| {format_delta(r.local_delta, r.is_reference, target_half_width)} | {len(r.seeds)} |\n"
        )
    out.write(
        "\nOwn model: the personalised one where a method keeps a personal part, else the global model (a client of "
        "such a method has nothing else). The global model is scored as each client received it, before its training "
        "in that round; a personalised model after it (docs/compare.md).\n"
    )
    return out.getvalue()


def results_markdown(
    rows: list[Row],
    command: str = "",
    reference: str = "fedit",
    last_k: int = 3,
    run: GridRun | None = None,
    elapsed_seconds: float | None = None,
    target_half_width: float = DEFAULT_TARGET_HALF_WIDTH,
    images: dict[str, list[tuple[str, str]]] | None = None,
) -> str:
    """One table per partition (the best final-accuracy mean is bold), a table of every weak tier when there
    are several, and `images` (partition -> [(caption, relative path)]) embedded below each."""
    out = io.StringIO()
    out.write("# fedhello compare: results\n\n")
    out.write(_wall_line(rows, run, elapsed_seconds))
    if command:
        out.write(f"Command: `{command}`\n\n")
    share = f"{100 * TARGET_SHARE:.0f} %"
    out.write(
        "Headline: final accuracy in % (the last round, evaluated on the whole test split), mean ± sample std "
        f"over seeds. last-{last_k} acc: mean of the last {last_k} evaluations; macro-F1: final round "
        f"({DASH} when the task does not record it). Rounds to {share}: the first evaluated round reaching "
        f"{share} of {reference}'s final accuracy on the same partition and seed, mean over the seeds that "
        "reached it (k/n never: seeds that did not); MB until: what the clients uploaded up to that round. "
        "Weak tier: the largest plan's whole memory (weights included) / step time over the median full-rank, "
        "all-layer plan on a tier that loads the run's own weights, without recomputation, on this partition "
        "(worst seed); over budget: the tier's plans that exceeded any of its budgets, of all its plans "
        f"({DASH} without `train.record_resources: true`, or for a method without weak tiers). upload: MB sent "
        "by a round's clients.\n"
    )
    for partition in dict.fromkeys(r.partition for r in rows):
        out.write(f"\n## {partition}\n\n")
        out.write(_table([r for r in rows if r.partition == partition], reference, last_k, target_half_width))
        for caption, path in (images or {}).get(partition, []):
            out.write(f"\n![{caption}]({path})\n")
    out.write("\nMethods:\n\n")
    for name in dict.fromkeys(r.method for r in rows):
        out.write(f"- `{name}`: {METHODS.get(name).summary if name in METHODS else ''}\n")
    return out.getvalue()


def plot_curves(rows: list[Row], partition: str, path: Path) -> Path:
    """Test accuracy per round for every method on one partition: mean over seeds with a ± std band."""
    bands = {r.method: r.band() for r in rows if r.partition == partition}
    return figures.save_png(figures.accuracy_bands(bands, title=partition), path)


def plot_frontier(rows: list[Row], partition: str, path: Path) -> Path | None:
    """Final accuracy (mean ± std) against the worst weak tier's largest-plan memory ratio, one labelled point
    per method, and a dashed line at the reference's mean. None (no file) when no method has a ratio."""
    part = [r for r in rows if r.partition == partition and r.values("final")]
    points = {
        r.method: (ratio, *(100 * v for v in mean_std(r.values("final"))))
        for r in part
        if (ratio := r.largest("worst_mem_ratio")) is not None
    }
    if not points:
        return None
    reference = next(((r.method, 100 * mean_std(r.values("final"))[0]) for r in part if r.is_reference), None)
    missing = [r.method for r in part if r.method not in points]
    colors = figures.method_colors([r.method for r in rows if r.partition == partition])  # as in plot_curves
    return figures.save_png(figures.frontier(points, reference, partition, missing, colors), path)


def _csv(rows: list[dict[str, Any]]) -> str:
    fields = list(dict.fromkeys(name for row in rows for name in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def write_results(
    cells: list[Cell],
    root: Path,
    command: str = "",
    reference: str = "fedit",
    last_k: int = 3,
    run: GridRun | None = None,
    elapsed_seconds: float | None = None,
    target_half_width: float = DEFAULT_TARGET_HALF_WIDTH,
) -> dict[str, Path]:
    """Write accuracy_<partition>.png, frontier_<partition>.png (when the cells recorded resources), results.md
    (embedding both), results.csv and cells.csv under `root`; return their paths."""
    rows = collect(cells, reference, last_k)
    root.mkdir(parents=True, exist_ok=True)
    paths = {"md": root / "results.md", "csv": root / "results.csv", "cells": root / "cells.csv"}
    images: dict[str, list[tuple[str, str]]] = {}
    for partition in dict.fromkeys(r.partition for r in rows):
        safe = _safe(partition)
        paths[f"png:{partition}"] = plot_curves(rows, partition, root / f"accuracy_{safe}.png")
        images[partition] = [(f"accuracy per round on {partition}, mean ± std over seeds", f"accuracy_{safe}.png")]
        frontier = plot_frontier(rows, partition, root / f"frontier_{safe}.png")
        if frontier is not None:
            paths[f"frontier:{partition}"] = frontier
            images[partition].append(
                (f"final accuracy vs. weak-tier largest-plan memory on {partition}", frontier.name)
            )
    markdown = results_markdown(rows, command, reference, last_k, run, elapsed_seconds, target_half_width, images)
    write_atomic(paths["md"], markdown)
    weak = sorted({i for p in images for i in weak_tier_labels([r for r in rows if r.partition == p])})
    write_atomic(paths["csv"], _csv([r.as_csv(weak, target_half_width) for r in rows]))
    write_atomic(paths["cells"], _csv([c.as_csv(weak) for r in rows for c in r.cells]))
    return paths
