"""`fedhello report`: one self-contained HTML page per run (or per comparison of runs).

The page embeds every figure as a base64 PNG and needs no network; the same PNGs are written beside it
so they can be dropped into papers or slides. Sections whose data a run lacks (no FIM refresh, no
profiled memory, no `partition.json` in older runs) say so instead of showing an empty plot.
"""

from __future__ import annotations

import base64
import html
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fedhello import figures
from fedhello.rundir import CONFIG_FILE, LM_EVAL_PREFIX, REPORT_DIR, RunData, as_number, load_run, tier_summary

REPORT_FILE = "report.html"


@dataclass
class Plot:
    """One figure of the report: its PNG file beside the page and the same bytes for embedding."""

    name: str
    title: str
    caption: str
    path: Path
    png: bytes

    def html(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        return (
            f'<figure id="{self.name}"><img src="data:image/png;base64,{data}" alt="{html.escape(self.title)}">'
            f"<figcaption><b>{html.escape(self.title)}.</b> {html.escape(self.caption)} "
            f'<a href="{html.escape(self.path.name)}">{html.escape(self.path.name)}</a></figcaption></figure>'
        )


class Page:
    """Collects the HTML blocks and PNG files of one report."""

    def __init__(self, out_dir: Path, prefix: str = "") -> None:
        self.out_dir = out_dir
        self.prefix = prefix
        self.blocks: list[str] = []
        self.plots: list[Plot] = []

    def heading(self, text: str, level: int = 2, anchor: str = "") -> None:
        anchor_attr = f' id="{anchor}"' if anchor else ""
        self.blocks.append(f"<h{level}{anchor_attr}>{html.escape(text)}</h{level}>")

    def note(self, text: str) -> None:
        self.blocks.append(f'<p class="note">{html.escape(text)}</p>')

    def raw(self, block: str) -> None:
        self.blocks.append(block)

    def figure(self, name: str, fig: Figure | None, title: str, caption: str, missing: str) -> Plot | None:
        """Save and embed a figure; when the run has no data for it, say `missing` instead."""
        if fig is None:
            self.note(missing)
            return None
        png = figures.png_bytes(fig, dpi=100)
        path = self.out_dir / f"{self.prefix}{name}.png"
        path.write_bytes(png)
        plot = Plot(f"{self.prefix}{name}", title, caption, path, png)
        self.plots.append(plot)
        self.blocks.append(plot.html())
        return plot


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(value: float | None, spec: str = ".4f", empty: str = "–") -> str:
    return empty if value is None else format(value, spec)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


# ---- sections ---------------------------------------------------------------------------------------------


def overview(page: Page, runs: Sequence[RunData]) -> None:
    rows = []
    for run in runs:
        cfg = run.config
        evaluated, accuracy = run.series("accuracy")
        best = max(range(len(accuracy)), key=accuracy.__getitem__, default=None)
        up = sum(as_number(r.get("bytes_up")) or 0.0 for r in run.metrics) / figures.MB
        down = sum(as_number(r.get("bytes_down")) or 0.0 for r in run.metrics) / figures.MB
        wall = [w for r in run.metrics if (w := as_number(r.get("wall_seconds"))) is not None]
        strategy = cfg.get("strategy", {})
        fed = cfg.get("federation", {})
        tiers = " / ".join(tier_summary(t) for t in cfg.get("tiers", []))
        rows.append(
            [
                run.name,
                strategy.get("name", "?") + (f" ({strategy['pattern']})" if strategy.get("pattern") else ""),
                cfg.get("partition", {}).get("kind", "?"),
                f"{fed.get('clients_per_round', '?')} of {fed.get('num_clients', '?')}",
                tiers or "?",
                len(run.metrics),
                _fmt(accuracy[-1] if accuracy else None),
                f"{accuracy[best]:.4f} (round {evaluated[best]})" if best is not None else "–",
                f"{up:.2f}",
                f"{down:.2f}",
                _fmt(_mean(wall), ".1f"),
            ]
        )
    metric = figures.headline_metric(runs)
    header = [
        "run",
        "strategy",
        "partition",
        "clients/round",
        "tiers",
        "rounds",
        f"final {metric}",
        f"best {metric}",
        "MB up",
        "MB down",
        "s/round",
    ]
    page.raw(table(header, rows))


def accuracy_section(page: Page, runs: Sequence[RunData]) -> None:
    metric = figures.headline_metric(runs)
    title = "Accuracy" if metric == "accuracy" else f"Test {metric}"
    page.heading(f"{title} and loss", anchor="curves")
    page.figure(
        "accuracy_loss",
        figures.curves(runs),
        f"{title} and loss per round",
        "Test metrics of the global adapter in evaluated rounds; the mean client training loss in every round.",
        "No round has metrics.",
    )
    if len(runs) > 1:
        page.figure(
            "accuracy_vs_upload",
            figures.accuracy_vs_upload(runs),
            "Accuracy against communication",
            "Test accuracy against the cumulative bytes all clients uploaded so far.",
            "No evaluated rounds.",
        )


def layer_sets_table(run: RunData) -> str:
    """Which layer sets each tier trained and how often (GD: one set per tier; random strategies: many)."""
    rows = []
    for tier in run.tiers:
        sets = Counter(tuple(sorted(int(x) for x in c.get("layers", []))) for c in run.clients if c.get("tier") == tier)
        if not sets:
            continue
        shown = ", ".join(f"{{{' '.join(map(str, s))}}} ×{n}" for s, n in sets.most_common(4))
        if len(sets) > 4:
            shown += f", … {len(sets) - 4} more sets"
        per_layer = Counter(x for s, n in sets.items() for x in s for _ in range(n))
        counts = " ".join(str(per_layer.get(layer, 0)) for layer in range(run.num_layers))
        rows.append([run.tier_name(tier), sum(sets.values()), len(sets), shown, counts])
    header = ["tier", "client-rounds", "distinct sets", "most frequent layer sets", "times each layer trained (0 …)"]
    return table(header, rows)


def allocation_section(page: Page, run: RunData) -> None:
    page.heading("Layer allocation", level=3)
    page.figure(
        "layer_heatmap",
        figures.layer_heatmap(run),
        "Clients training each layer",
        "Per round, how many of the sampled clients trained each LoRA layer (layer 0 is nearest the input).",
        "No client allocations recorded.",
    )
    page.figure(
        "tier_layers",
        figures.tier_layer_heatmaps(run),
        "Layer sets per tier",
        "Per tier, the share of its sampled clients that trained each layer in each round.",
        "No per-tier allocations recorded.",
    )
    page.raw(layer_sets_table(run))


def importance_section(page: Page, run: RunData) -> None:
    page.heading("Layer importance (FIM)", level=3)
    strategy = run.config.get("strategy", {}).get("name", "this strategy")
    page.figure(
        "importance",
        figures.importance(run),
        "Fisher layer scores and sampling probabilities",
        "At each FIM refresh: the layer scores on the proxy set and the probabilities the allocator draws layers with.",
        f"No FIM refresh in this run ({strategy} does not estimate layer importance, or the run ended before the "
        "first refresh).",
    )
    if run.importance:
        rows = [
            [
                r["round"],
                " ".join(f"{s:.3g}" for s in r.get("scores", [])),
                " ".join(map(str, r.get("levels", []))),
                " ".join(f"{p:.3f}" for p in r.get("probabilities", [])),
            ]
            for r in run.importance
        ]
        page.raw(table(["refresh round", "scores (layer 0 …)", "levels", "probabilities"], rows))


def tier_cost_table(run: RunData) -> str:
    rows = []
    has_memory = any(as_number(c.get("peak_mem_mb")) is not None for c in run.clients)
    has_steps = any(as_number(c.get("step_seconds")) is not None for c in run.clients)
    for tier in run.tiers:
        clients = [c for c in run.clients if c.get("tier") == tier]
        if not clients:
            continue
        up = [v for c in clients if (v := as_number(c.get("bytes_up"))) is not None]
        down = [v for c in clients if (v := figures.download_bytes(run, c)) is not None]
        seconds = [v for c in clients if (v := as_number(c.get("seconds"))) is not None]
        row = [
            run.tier_name(tier),
            len(clients),
            _fmt(_mean([len(c.get("layers", [])) for c in clients]), ".2f"),
            _fmt(_mean(up) / figures.MB if up else None, ".3f"),
            _fmt(_mean(down) / figures.MB if down else None, ".3f"),
            _fmt(_mean(seconds), ".2f"),
        ]
        if has_steps:
            steps = [v for c in clients if (v := as_number(c.get("step_seconds"))) is not None]
            row.append(_fmt(_mean(steps), ".3f"))
        if has_memory:
            memory = [v for c in clients if (v := as_number(c.get("peak_mem_mb"))) is not None]
            row.append(_fmt(max(memory) if memory else None, ".1f"))
        rows.append(row)
    header = ["tier", "client-rounds", "layers trained", "MB up / client", "MB down / client", "train s / client"]
    if has_steps:
        header.append("median step s (mean)")
    if has_memory:
        header.append("peak memory MB (max)")
    return table(header, rows)


def cost_section(page: Page, run: RunData) -> None:
    page.heading("Cost per tier", level=3)
    page.figure(
        "communication",
        figures.communication(run),
        "Communication per round",
        "Bytes the sampled clients uploaded (only their trained layers and the head) and downloaded, by tier.",
        "No byte counts recorded.",
    )
    page.figure(
        "train_seconds",
        figures.train_seconds(run),
        "Local training time",
        "Mean wall-clock seconds of local training per client, per round and tier.",
        "No training times recorded.",
    )
    page.figure(
        "peak_memory",
        figures.peak_memory(run),
        "Peak memory per tier",
        "Peak training memory per client (mean and max over the client-rounds of each tier).",
        "Peak memory was not profiled in this run (no peak_mem_mb in metrics.jsonl; record it with "
        "--set train.record_resources=true).",
    )
    page.raw(tier_cost_table(run))


def partition_section(page: Page, run: RunData) -> None:
    page.heading("Data partition", level=3)
    stats = run.partition or {}
    page.figure(
        "partition",
        figures.partition(run),
        "Label distribution per client",
        "Training samples of each label held by each client; tick labels give the client id and its tier (T).",
        "No partition.json in this run folder (runs written before it existed); label distributions unavailable.",
    )
    if stats:
        page.note(
            f"{len(stats.get('clients', []))} clients, {sum(c['num_samples'] for c in stats.get('clients', []))} "
            f"training samples, {stats.get('proxy_size', '?')} proxy samples (held out for FIM), "
            f"{stats.get('test_size', '?')} test samples."
        )


def lm_eval_table(run: RunData) -> str | None:
    """One row per lm-eval task and metric, one column per round it was scored in (value ± stderr); None
    when the run scored no lm-eval task (`eval.lm_eval_tasks`)."""
    scored: dict[int, dict[tuple[str, str], float]] = {}
    for record in run.metrics:
        for key, value in record.items():
            number = as_number(value)
            if key.startswith(LM_EVAL_PREFIX) and number is not None:
                task, metric = key[len(LM_EVAL_PREFIX) :].rsplit(".", 1)
                scored.setdefault(int(record["round"]), {})[(task, metric)] = number
    if not scored:
        return None
    rounds = sorted(scored)
    keys = {key for scores in scored.values() for key in scores}
    shown = sorted(k for k in keys if not k[1].endswith("_stderr") and k[1] != "samples")
    rows = []
    for task, metric in shown:
        cells = []
        for r in rounds:
            value, stderr = scored[r].get((task, metric)), scored[r].get((task, f"{metric}_stderr"))
            cells.append(_fmt(value) + (f" ± {stderr:.4f}" if value is not None and stderr is not None else ""))
        documents = scored[rounds[-1]].get((task, "samples"))
        rows.append([task, metric, _fmt(documents, ".0f"), *cells])
    return table(["task", "metric", "documents", *(f"round {r}" for r in rounds)], rows)


def lm_eval_section(page: Page, run: RunData) -> None:
    """Benchmark scores of the global adapter (lm-evaluation-harness); left out of runs that scored none."""
    scores = lm_eval_table(run)
    if scores is None:
        return
    page.heading("Benchmarks (lm-eval)", level=3)
    page.note(
        "lm-evaluation-harness scores of the global adapter in the rounds they were computed "
        "(eval.lm_eval_tasks, after the last round and every eval.lm_eval_every rounds)."
    )
    page.raw(scores)


STATS = ("weighted_mean", "mean", "std", "min", "max")  # a round record's summary of per-client local test scores


def local_test_section(page: Page, run: RunData) -> None:
    """Personalised evaluation, when the run held out local test splits (`federation.local_test`)."""
    scored = [r for r in run.metrics if r.get("local_test")]
    if not scored:
        return
    page.heading("Personalised evaluation", level=3)
    page.figure(
        "local_test",
        figures.local_test(run),
        "Per-client scores on the local test splits",
        "On each evaluation round, every sampled client's score on its own held-out split: the global model it "
        "received (before training) and its personalised model (after training, its personal part included; "
        "methods with one). Lines: means weighted by local-test size (docs/compare.md, Personalised evaluation).",
        "No local test scores recorded.",
    )
    rows = [
        [r["round"], kind, len(s["clients"]), *(_fmt(s[k], ".4f") for k in STATS)]
        for r in scored
        for kind, s in r["local_test"].items()
    ]
    page.raw(table(["round", "model", "clients", "weighted mean", "mean", "std", "min", "max"], rows))


def config_section(page: Page, run: RunData) -> None:
    path = run.path / CONFIG_FILE
    if path.exists():
        text = html.escape(path.read_text())
        page.raw(f"<details><summary>resolved config.yaml</summary><pre>{text}</pre></details>")


RUN_SECTIONS: tuple[Callable[[Page, RunData], None], ...] = (
    lm_eval_section,
    allocation_section,
    importance_section,
    cost_section,
    local_test_section,
    partition_section,
    config_section,
)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 0 24px 48px; color: #222; }
h1 { margin-top: 24px; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 36px; }
figure { margin: 16px 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #444; }
table { border-collapse: collapse; font-size: 0.85em; margin: 12px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } .note { color: #777; font-style: italic; } pre { background: #f7f7f7; padding: 8px; }
nav a { margin-right: 12px; }
"""

# Marks the page once loaded, so a headless browser (and its tests) can tell every image decoded.
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var broken = 0;
  for (var i = 0; i < document.images.length; i++) {
    var img = document.images[i];
    if (!img.complete || img.naturalWidth === 0) { broken++; }
  }
  document.body.setAttribute("data-images", String(document.images.length));
  document.body.setAttribute("data-broken-images", String(broken));
});
"""


def default_out_dir(run_dirs: Sequence[Path]) -> Path:
    """`RUN_DIR/report` for one run; `<parent of the first run>/compare-<time>` for several."""
    if len(run_dirs) == 1:
        return Path(run_dirs[0]) / REPORT_DIR
    return Path(run_dirs[0]).parent / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path | None = None) -> Path:
    """Write `report.html` and its PNGs into `out_dir` for one or several run folders; return the page's path."""
    paths = [Path(p) for p in run_dirs]
    runs = [load_run(p) for p in paths]
    out = Path(out_dir) if out_dir is not None else default_out_dir(paths)
    out.mkdir(parents=True, exist_ok=True)
    page = Page(out)
    title = f"fedhello report: {runs[0].label}" if len(runs) == 1 else f"fedhello report: {len(runs)} runs"
    page.raw(f"<h1>{html.escape(title)}</h1>")
    page.raw(
        f'<p class="note">generated {time.strftime("%Y-%m-%d %H:%M:%S")} from '
        + ", ".join(html.escape(str(r.path)) for r in runs)
        + "</p>"
    )
    if len(runs) > 1:
        page.raw(
            "<nav>"
            + "".join(f'<a href="#run{i + 1}">{html.escape(r.label)}</a>' for i, r in enumerate(runs))
            + "</nav>"
        )
    page.heading("Overview", anchor="overview")
    overview(page, runs)
    accuracy_section(page, runs)
    for i, run in enumerate(runs):
        if len(runs) > 1:
            page.prefix = f"run{i + 1}-"
            page.heading(f"Run {i + 1}: {run.label}", anchor=f"run{i + 1}")
        else:
            page.heading("Run details", anchor="run1")
        for section in RUN_SECTIONS:
            section(page, run)
    document = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(page.blocks)
        + f"\n<script>{CHECK_SCRIPT}</script>\n</body></html>\n"
    )
    path = out / REPORT_FILE
    path.write_text(document, encoding="utf-8")
    return path
