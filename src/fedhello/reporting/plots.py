"""Plots written into run folders (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_accuracy(records: list[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Test accuracy per round."""
    points = [(r["round"], r["accuracy"]) for r in records if r.get("accuracy") is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if points:
        rounds, accuracy = zip(*points, strict=True)
        ax.plot(rounds, accuracy, marker="o", markersize=3)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
