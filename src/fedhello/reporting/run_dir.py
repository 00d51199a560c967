"""The run folder: resolved config, per-round metrics, allocation history, importance log, adapter, plot.

Layout of `RUN_DIR`:
  config.yaml        resolved configuration (every default filled in)
  metrics.jsonl      one JSON object per round
  allocations.csv    round, client, tier, layers trained
  importance.jsonl   FIM scores, levels and probabilities at each refresh
  summary.json       best/final accuracy and totals
  adapter/           final global adapter (`PeftModel.from_pretrained(base, RUN_DIR/adapter)`)
  accuracy.png       test accuracy per round
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path
from typing import Any

from fedhello.config import RunConfig, dump_config


def new_run_dir(config: RunConfig, out: str | Path | None = None) -> Path:
    """A fresh folder `<output.dir>/<name>-<timestamp>` (or exactly `out` when given)."""
    if out is not None:
        path = Path(out)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(config.output.dir) / f"{config.name}-{stamp}"
        suffix = 1
        while path.exists():
            path = Path(config.output.dir) / f"{config.name}-{stamp}-{suffix}"
            suffix += 1
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class RunWriter:
    """Appends round records to the run folder as the run goes."""

    def __init__(self, path: Path, config: RunConfig) -> None:
        self.path = path
        self.config = config
        path.mkdir(parents=True, exist_ok=True)
        dump_config(config, path / "config.yaml")
        self.metrics_file = path / "metrics.jsonl"
        self.allocations_file = path / "allocations.csv"
        self.importance_file = path / "importance.jsonl"
        if not self.allocations_file.exists():
            with self.allocations_file.open("w", newline="") as f:
                csv.writer(f).writerow(["round", "client", "tier", "layers"])

    def log_round(self, record: dict[str, Any]) -> None:
        with self.metrics_file.open("a") as f:
            f.write(json.dumps(record) + "\n")
        with self.allocations_file.open("a", newline="") as f:
            writer = csv.writer(f)
            for client in record["clients"]:
                layers = " ".join(str(i) for i in client["layers"])
                writer.writerow([record["round"], client["id"], client["tier"], layers])

    def log_importance(self, record: dict[str, Any]) -> None:
        with self.importance_file.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        return [json.loads(line) for line in self.metrics_file.read_text().splitlines() if line.strip()]

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_atomic(self.path / "summary.json", json.dumps(summary, indent=2))


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    evaluated = [r for r in records if r.get("accuracy") is not None]
    best = max(evaluated, key=lambda r: r["accuracy"], default=None)
    return {
        "rounds": len(records),
        "final_accuracy": evaluated[-1]["accuracy"] if evaluated else None,
        "final_macro_f1": evaluated[-1].get("macro_f1") if evaluated else None,
        "best_accuracy": best["accuracy"] if best else None,
        "best_round": best["round"] if best else None,
        "total_bytes_up": sum(r["bytes_up"] for r in records),
        "total_bytes_down": sum(r["bytes_down"] for r in records),
        "mean_round_seconds": sum(r["wall_seconds"] for r in records) / max(len(records), 1),
    }
