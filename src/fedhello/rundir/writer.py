"""`RunWriter`: the observer that writes a run into its folder as it goes."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from fedhello.config import dump_config
from fedhello.events import RunObserver, RunStart
from fedhello.rundir.files import (
    ALLOCATIONS_FILE,
    CONFIG_FILE,
    IMPORTANCE_FILE,
    METRICS_FILE,
    PARTITION_FILE,
    SUMMARY_FILE,
    write_atomic,
)


def summarize(
    records: list[dict[str, Any]], run_dir: Path, resumed_from: int | None = None, metric: str = "accuracy"
) -> dict[str, Any]:
    """summary.json of a run whose rounds are `records`: its headline metric (`metric`, the task's: accuracy,
    or rouge_l for a causal LM) final and best, totals, failures.

    The headline value is each record's `accuracy` (a causal LM reports its ROUGE-L there), so readers of
    `final_accuracy` / `best_accuracy` keep working; `metric` names what it is, and a metric other than
    accuracy is also written under its own name (`final_rouge_l`, `best_rouge_l`)."""
    evaluated = [r for r in records if r.get("accuracy") is not None]
    best = max(evaluated, key=lambda r: r["accuracy"], default=None)
    final_value = evaluated[-1]["accuracy"] if evaluated else None
    best_value = best["accuracy"] if best else None
    named = {f"final_{metric}": final_value, f"best_{metric}": best_value} if metric != "accuracy" else {}
    return {
        "rounds": len(records),
        "metric": metric,
        **named,
        "final_accuracy": final_value,
        "final_macro_f1": evaluated[-1].get("macro_f1") if evaluated else None,
        "best_accuracy": best_value,
        "best_round": best["round"] if best else None,
        "total_bytes_up": sum(r["bytes_up"] for r in records),
        "total_bytes_down": sum(r["bytes_down"] for r in records),
        "mean_round_seconds": sum(r["wall_seconds"] for r in records) / max(len(records), 1),
        "run_dir": str(run_dir),
        "resumed_from": resumed_from,
        "rejected_updates": sum(len(r.get("rejected", [])) for r in records),
        "failed_clients": sum(len(r.get("failed_clients", [])) for r in records),
        "skipped_rounds": sum(1 for r in records if r.get("skipped")),
        **final_local_test(records),  # personalised evaluation's last scores, when `federation.local_test` is on
        **final_privacy(records),
    }


def final_privacy(records: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's privacy (`privacy.mode` on): the epsilon spent at its delta, and why the run stopped early
    if it did (a spent budget); empty otherwise."""
    private = [r["privacy"] for r in records if r.get("privacy")]
    stopped = [r["stopped"] for r in records if r.get("stopped")]
    out: dict[str, Any] = {}
    if private:
        out.update({"epsilon": private[-1]["epsilon"], "delta": private[-1]["delta"]})
    if stopped:
        out["stopped"] = stopped[-1]
    return out


def final_local_test(records: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json's personalised results: the last record with local-test scores (`local_test`) and, flat, each
    kind's weighted and unweighted means (`final_local_<kind>`, `final_local_<kind>_unweighted`); empty when none."""
    scored = [r for r in records if r.get("local_test")]
    if not scored:
        return {}
    last = scored[-1]
    flat: dict[str, Any] = {"local_test_round": last["round"], "local_test": last["local_test"]}
    for kind, stats in last["local_test"].items():
        flat[f"final_local_{kind}"] = stats["weighted_mean"]
        flat[f"final_local_{kind}_unweighted"] = stats["mean"]
    return flat


class RunWriter(RunObserver):
    """Writes config.yaml and partition.json at the start, appends metrics.jsonl, allocations.csv and
    importance.jsonl as rounds end, and writes summary.json last."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def _file(self, name: str) -> Path:
        assert self.path is not None, "on_run_start comes first"
        return self.path / name

    def on_run_start(self, start: RunStart) -> None:
        self.path = start.run_dir
        self.path.mkdir(parents=True, exist_ok=True)
        dump_config(start.config, self._file(CONFIG_FILE))
        if start.partition is not None:
            write_atomic(self._file(PARTITION_FILE), json.dumps(start.partition, indent=1))
        if not self._file(ALLOCATIONS_FILE).exists():
            with self._file(ALLOCATIONS_FILE).open("w", newline="") as f:
                csv.writer(f).writerow(["round", "client", "tier", "layers"])

    def on_importance(self, record: dict[str, Any]) -> None:
        with self._file(IMPORTANCE_FILE).open("a") as f:
            f.write(json.dumps(record) + "\n")

    def on_round_end(self, record: dict[str, Any]) -> None:
        with self._file(METRICS_FILE).open("a") as f:
            f.write(json.dumps(record) + "\n")
        with self._file(ALLOCATIONS_FILE).open("a", newline="") as f:
            writer = csv.writer(f)
            for client in record["clients"]:
                layers = " ".join(str(i) for i in client["layers"])
                writer.writerow([record["round"], client["id"], client["tier"], layers])

    def on_run_end(self, summary: dict[str, Any]) -> None:
        write_atomic(self._file(SUMMARY_FILE), json.dumps(summary, indent=2))
