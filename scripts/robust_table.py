"""The hostile-client table of docs/privacy.md from the grids scripts/robust-grid.sh wrote: final accuracy per
aggregator and hostile count (mean ± std over seeds), its paired difference to masked FedAvg under the same attack
and to FedAvg without attack (95 % t-intervals; a tie when one holds 0).
Usage: python scripts/robust_table.py OUT REFERENCE
(OUT holds <aggregator>-<hostile>/; REFERENCE is the no-attack grid)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fedhello.compare.results import format_delta
from fedhello.compare.stats import mean_std, paired_difference

AGGREGATORS = ("fedavg", "median", "trimmed_mean", "multi_krum")


def finals(grid: Path, method: str = "fedit") -> dict[int, float]:
    """seed -> final accuracy of every finished cell of `method` in a grid folder."""
    out = {}
    for summary in sorted(grid.glob(f"*/{method}/seed*/summary.json")):
        out[int(summary.parent.name.removeprefix("seed"))] = json.loads(summary.read_text())["final_accuracy"]
    return out


def delta(values: dict[int, float], reference: dict[int, float]) -> str:
    return format_delta(paired_difference(values, reference))


def main(root: Path, reference_grid: Path) -> None:
    clean = finals(reference_grid)
    lines = [
        "| hostile of 6 | aggregator | final accuracy, % | Δ vs FedAvg under attack | Δ vs FedAvg, no attack | seeds |",
        "|---|---|---|---|---|---|",
    ]
    if clean:
        mean, std = mean_std([100 * v for v in clean.values()])
        lines.append(f"| 0 | fedavg | {mean:.1f} ± {std:.1f} | – | reference | {len(clean)} |")
    for hostile in (1, 2):
        attacked = finals(root / f"fedavg-{hostile}")
        for name in AGGREGATORS:
            values = finals(root / f"{name}-{hostile}")
            if not values:
                continue
            mean, std = mean_std([100 * v for v in values.values()])
            versus = "reference" if name == "fedavg" else delta(values, attacked)
            lines.append(
                f"| {hostile} | {name} | {mean:.1f} ± {std:.1f} | {versus} | {delta(values, clean)} | {len(values)} |"
            )
    print("\n".join(lines))
    (root / "robust.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
