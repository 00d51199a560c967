"""The table and plot of docs/privacy.md from the grids scripts/privacy-grid.sh wrote (eps-*/, clip-only/,
no-dp/): final accuracy per privacy budget (mean ± std over seeds) and its paired difference to the same seeds
without DP (95 % t-interval; a tie when it holds 0). Usage: python scripts/privacy_table.py OUT"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fedhello.compare.results import format_delta
from fedhello.compare.stats import mean_std, paired_difference
from fedhello.figures import _figure, save_png


def finals(grid: Path, method: str) -> dict[int, dict]:
    """seed -> summary.json of every finished cell of `method` in a grid folder."""
    out = {}
    for summary in sorted(grid.glob(f"*/{method}/seed*/summary.json")):
        out[int(summary.parent.name.removeprefix("seed"))] = json.loads(summary.read_text())
    return out


def main(root: Path, method: str = "fedit") -> None:
    reference = {seed: s["final_accuracy"] for seed, s in finals(root / "no-dp", method).items()}
    grids = sorted(root.glob("eps-*"), key=lambda p: float(p.name.removeprefix("eps-")))
    lines = [
        "| epsilon (delta 1e-5) | noise multiplier | final accuracy, % | Δ vs no DP, points | seeds |",
        "|---|---|---|---|---|",
    ]
    points = []
    for grid in grids:
        cells = finals(grid, method)
        if not cells:
            continue
        values = {seed: s["final_accuracy"] for seed, s in cells.items()}
        config = (next(iter(grid.glob(f"*/{method}/seed*/config.yaml")))).read_text()
        z = next(line.split(":")[1].strip() for line in config.splitlines() if "noise_multiplier" in line)
        spent = max(s["epsilon"] for s in cells.values())
        mean, std = mean_std([100 * v for v in values.values()])
        delta = format_delta(paired_difference(values, reference))
        lines.append(f"| {spent:.3g} | {z} | {mean:.1f} ± {std:.1f} | {delta} | {len(values)} |")
        points.append((float(grid.name.removeprefix("eps-")), mean, std))
    clipped = {seed: s["final_accuracy"] for seed, s in finals(root / "clip-only", method).items()}
    if clipped:  # privacy.noise_multiplier 0: what clipping alone costs
        mean, std = mean_std([100 * v for v in clipped.values()])
        delta = format_delta(paired_difference(clipped, reference))
        lines.append(f"| ∞ (clipped, no noise) | 0 | {mean:.1f} ± {std:.1f} | {delta} | {len(clipped)} |")
    if reference:
        mean, std = mean_std([100 * v for v in reference.values()])
        lines.append(f"| ∞ (no DP) | – | {mean:.1f} ± {std:.1f} | reference | {len(reference)} |")
    print("\n".join(lines))
    (root / "privacy.md").write_text("\n".join(lines) + "\n")
    figure, axes = _figure(5.0, 3.2)
    ax = axes[0]
    if points:
        xs, ys, es = zip(*points, strict=True)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f"{method} with DP")
    if reference:
        ax.axhline(mean, color="gray", linestyle="--", label="no DP")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon after 12 rounds (delta 1e-5)")
    ax.set_ylabel("final accuracy, %")
    ax.legend()
    save_png(figure, root / "accuracy_vs_epsilon.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
