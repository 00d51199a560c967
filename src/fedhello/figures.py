"""Every figure fedhello draws: the run folder's accuracy.png, the report's figures and the accuracy plots of
`fedhello compare`. matplotlib's object API only (no pyplot state, so nothing to close or leak).

Each report figure is drawn from `RunData` and returns a `Figure`, or None when the run holds no data for it
(no FIM refresh, no profiled memory, no partition stats), so the report can say so instead of drawing an
empty plot. `png_bytes` and `save_png` turn a figure into a PNG.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from fedhello.rundir import RunData, as_number, write_atomic

MB = 1e6
_TIER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]


def tier_color(tier: int) -> str:
    return _TIER_COLORS[tier % len(_TIER_COLORS)]


def _figure(width: float, height: float, cols: int = 1, rows: int = 1) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes.ravel()


def png_bytes(figure: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_png(figure: Figure, path: Path, dpi: int = 120) -> Path:
    """Write the figure as a PNG file (atomically) and return its path."""
    write_atomic(path, png_bytes(figure, dpi))
    return path


def integer_rounds(ax: Axes) -> None:
    """Whole-number ticks on a round axis, also with a single evaluated round (matplotlib's own integer
    locator falls back to fractional ticks when the view holds fewer than two whole numbers)."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def accuracy_lines(
    lines: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    title: str = "",
    size: tuple[float, float] = (6, 3.5),
    metric: str = "accuracy",
) -> Figure:
    """The headline metric (`metric`: accuracy, rouge_l) per round, one line per label: a run's accuracy.png
    (one unlabelled line), or one line per method in `fedhello compare`."""
    fig, (ax,) = _figure(*size)
    for label, (rounds, accuracy) in lines.items():
        ax.plot(rounds, accuracy, marker="o", markersize=3, label=label or None)
    ax.set(xlabel="round", ylabel=f"test {metric}", ylim=(0, 1), title=title)
    integer_rounds(ax)
    ax.grid(alpha=0.3)
    if any(lines):
        ax.legend(fontsize=7, ncol=2)
    return fig


def curves(runs: Sequence[RunData]) -> Figure:
    """The headline metric (accuracy, or the runs' own, e.g. rouge_l) and loss per round (test loss solid, mean
    client train loss dashed); runs overlaid."""
    fig, (acc_ax, loss_ax) = _figure(11, 3.8, cols=2)
    metric = headline_metric(runs)
    for i, run in enumerate(runs):
        color = f"C{i}"
        rounds, acc = run.series("accuracy")
        acc_ax.plot(rounds, acc, marker="o", markersize=4, color=color, label=run.label)
        rounds, loss = run.series("loss")
        loss_ax.plot(rounds, loss, marker="o", markersize=4, color=color, label=f"{run.label} test")
        rounds, train = run.series("train_loss")
        loss_ax.plot(rounds, train, linestyle="--", color=color, alpha=0.7, label=f"{run.label} train")
    acc_ax.set(xlabel="round", ylabel=f"test {metric}", title=metric, ylim=(0, 1))
    loss_ax.set(xlabel="round", ylabel="loss", title="loss (solid: test, dashed: mean client train)")
    for ax in (acc_ax, loss_ax):
        ax.grid(alpha=0.3)
        integer_rounds(ax)
    acc_ax.legend(fontsize=8, loc="lower right")
    return fig


def headline_metric(runs: Sequence[RunData]) -> str:
    """The name of the runs' headline metric (`RunData.metric`), or "accuracy / score" for runs that differ."""
    names = {run.metric for run in runs}
    return names.pop() if len(names) == 1 else "accuracy / score"


def method_colors(names: Sequence[str]) -> dict[str, tuple]:
    """One colour per method, in the given order: the same method looks the same in every compare figure."""
    return dict(zip(names, _label_colors(len(names)), strict=True))


def accuracy_bands(
    bands: Mapping[str, tuple[Sequence[int], Sequence[float], Sequence[float]]], title: str = ""
) -> Figure:
    """`fedhello compare`'s accuracy per round: per method (rounds, mean, std over seeds) a line at the mean
    and a shaded band mean ± std (none for one seed)."""
    fig, (ax,) = _figure(8.5, 4.5)
    colors = method_colors(list(bands))
    for label, (rounds, mean, std) in bands.items():
        color = colors[label]
        mean_arr, std_arr = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
        ax.plot(rounds, mean_arr, marker="o", markersize=3, color=color, label=label)
        if std_arr.any():
            ax.fill_between(rounds, mean_arr - std_arr, mean_arr + std_arr, color=color, alpha=0.15, linewidth=0)
    ax.set(xlabel="round", ylabel="test accuracy (mean ± std over seeds)", ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    integer_rounds(ax)
    if bands:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), title="method", title_fontsize=8)
    return fig


def frontier(
    points: Mapping[str, tuple[float, float, float]],
    reference: tuple[str, float] | None,
    title: str,
    missing: Sequence[str] = (),
    colors: Mapping[str, tuple] | None = None,
) -> Figure:
    """`fedhello compare`'s frontier: per method (x = the worst weak tier's largest-plan memory ratio, final
    accuracy mean, std) a labelled point with error bars; a dashed line at the reference method's mean, a
    dotted one at x = 1 (the reference plan), and the methods without weak-tier plans named below. `colors`:
    method -> colour (default: `method_colors` of the points)."""
    fig, (ax,) = _figure(7.5, 4.8)
    colors = colors or method_colors(list(points))
    for method, (x, mean, std) in points.items():
        ax.errorbar([x], [mean], yerr=[std], fmt="o", capsize=3, color=colors[method])
        ax.annotate(method, (x, mean), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.axvline(1.0, linestyle=":", color="grey", linewidth=1, label="full reference plan")
    if reference is not None:
        ax.axhline(reference[1], linestyle="--", color="grey", label=f"{reference[0]} mean accuracy")
    ax.legend(fontsize=8, loc="best")
    ax.margins(x=0.12)  # room for the labels of the outermost points
    ax.set(
        xlabel="largest weak-tier plan's memory / full-rank all-layer plan (worst weak tier, worst seed)",
        ylabel="final test accuracy (%, mean ± std)",
        title=f"{title}: accuracy vs. the memory weak devices must hold",
    )
    if missing:
        ax.text(
            0.0,
            -0.2,
            "no weak-tier plan: " + ", ".join(missing),
            transform=ax.transAxes,
            fontsize=7,
            color="dimgrey",
            va="top",
        )
    ax.grid(alpha=0.3)
    return fig


def accuracy_vs_upload(runs: Sequence[RunData]) -> Figure:
    """Test accuracy against cumulative client upload: what each run paid for its accuracy."""
    fig, (ax,) = _figure(6.5, 3.8)
    for i, run in enumerate(runs):
        cumulative, points = 0.0, []
        for record in run.metrics:
            cumulative += as_number(record.get("bytes_up")) or 0.0
            accuracy = as_number(record.get("accuracy"))
            if accuracy is not None:
                points.append((cumulative / MB, accuracy))
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", markersize=4, color=f"C{i}", label=run.label)
    ax.set(xlabel="cumulative upload (MB)", ylabel="test accuracy", title="accuracy vs. upload", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def layer_counts(run: RunData, tier: int | None = None) -> np.ndarray:
    """(layers, rounds) matrix: how many sampled clients (of one tier, or all) trained each layer."""
    rounds = run.rounds
    column = {r: j for j, r in enumerate(rounds)}
    counts = np.zeros((run.num_layers, len(rounds)), dtype=int)
    for client in run.clients:
        if tier is not None and client.get("tier") != tier:
            continue
        for layer in client.get("layers", []):
            if 0 <= int(layer) < run.num_layers:
                counts[int(layer), column[client["round"]]] += 1
    return counts


def _heatmap(ax, matrix: np.ndarray, rounds: list[int], vmax: float, cmap: str, fmt: str):  # noqa: ANN001
    image = ax.imshow(matrix, aspect="auto", origin="lower", cmap=cmap, vmin=0, vmax=max(vmax, 1e-9))
    ax.set_yticks(range(matrix.shape[0]))
    step = max(1, len(rounds) // 20)
    ax.set_xticks(range(0, len(rounds), step), [str(r) for r in rounds[::step]])
    if matrix.size <= 400:  # numbers stay readable up to ~20 rounds x 20 layers
        for (y, x), value in np.ndenumerate(matrix):
            if value:
                light = value > 0.6 * vmax
                ax.text(
                    x,
                    y,
                    format(value, fmt),
                    ha="center",
                    va="center",
                    fontsize=7 if len(rounds) <= 12 else 6,
                    color="white" if light else "black",
                )
    return image


def layer_heatmap(run: RunData) -> Figure | None:
    """Layer x round heatmap of how many clients trained each layer; FIM refresh rounds marked."""
    counts = layer_counts(run)
    if counts.size == 0:
        return None
    rounds = run.rounds
    fig, (ax,) = _figure(max(6.0, 0.35 * len(rounds) + 2.5), max(2.8, 0.32 * run.num_layers + 1.4))
    vmax = max(int(counts.max()), max((len(r.get("clients", [])) for r in run.metrics), default=1))
    image = _heatmap(ax, counts, rounds, vmax, "viridis", "d")
    refreshes = {int(r["round"]) for r in run.importance}
    for j, round_num in enumerate(rounds):
        if round_num in refreshes:
            ax.axvline(j - 0.5, color="red", linewidth=1.5)
    ax.set(
        xlabel="round" + (" (red line: FIM refresh before the round)" if refreshes else ""),
        ylabel="layer (0 = nearest input)",
        title="clients training each layer",
    )
    fig.colorbar(image, ax=ax, label="clients")
    return fig


def tier_layer_heatmaps(run: RunData) -> Figure | None:
    """One panel per tier: the share of that tier's sampled clients that trained each layer, per round."""
    tiers = [t for t in run.tiers if any(c.get("tier") == t for c in run.clients)]
    if not tiers:
        return None
    rounds = run.rounds
    per_round = defaultdict(int)
    for client in run.clients:
        per_round[(client["tier"], client["round"])] += 1
    cols = min(len(tiers), 3)
    rows = -(-len(tiers) // cols)
    width = cols * max(3.2, 0.2 * len(rounds) + 1.0) + 1.0
    fig, axes = _figure(width, rows * max(2.4, 0.32 * run.num_layers + 1.2), cols=cols, rows=rows)
    image = None
    for ax, tier in zip(axes, tiers, strict=False):
        counts = layer_counts(run, tier).astype(float)
        sampled = np.array([per_round[(tier, r)] for r in rounds], dtype=float)
        share = np.divide(counts, sampled, out=np.zeros_like(counts), where=sampled > 0)
        image = _heatmap(ax, share, rounds, 1.0, "Blues", ".2g")
        ax.set(xlabel="round", ylabel="layer")
        ax.set_title(run.tier_name(tier), fontsize=10, loc="left")
    for ax in axes[len(tiers) :]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes), label="share of the tier's clients", shrink=0.9)
    return fig


def importance(run: RunData) -> Figure | None:
    """FIM layer scores and the allocation probabilities derived from them, at each refresh."""
    refreshes = [r for r in run.importance if r.get("scores")]
    if not refreshes:
        return None
    fig, (score_ax, prob_ax) = _figure(11, 3.8, cols=2)
    colors = [f"C{i % 10}" for i in range(len(refreshes))]
    layers = np.arange(len(refreshes[0]["scores"]))
    width = 0.8 / len(refreshes)
    for i, (record, color) in enumerate(zip(refreshes, colors, strict=True)):
        label = f"round {record['round']}"
        score_ax.plot(layers, record["scores"], marker="o", color=color, label=label)
        probabilities = record.get("probabilities")
        if probabilities:
            offset = (i - (len(refreshes) - 1) / 2) * width
            prob_ax.bar(layers + offset, probabilities, width=width, color=color, label=label)
    score_ax.set(xlabel="layer (0 = nearest input)", ylabel="Fisher score", title="FIM layer scores", xticks=layers)
    prob_ax.set(
        xlabel="layer (0 = nearest input)", ylabel="probability", title="layer sampling probabilities", xticks=layers
    )
    for ax in (score_ax, prob_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="refresh")
    return fig


def _per_tier(run: RunData, value_of) -> dict[int, dict[int, list[float]]]:  # noqa: ANN001
    """tier -> round -> values of one per-client quantity (missing values skipped)."""
    table: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for client in run.clients:
        value = value_of(client)
        if value is not None and client.get("tier") is not None:
            table[int(client["tier"])][client["round"]].append(value)
    return table


def contacts(record: dict) -> int:
    """Clients the server sent the global adapter to in a round, counting retries, failures and rejections."""
    return len(record.get("clients", [])) + len(record.get("failed_clients", [])) + len(record.get("rejected", []))


def download_bytes(run: RunData, client: dict) -> float | None:
    """A client's download in its round: its own field if recorded, else the round's total split over contacts."""
    own = as_number(client.get("bytes_down"))
    if own is not None:
        return own
    record = next((r for r in run.metrics if int(r["round"]) == client["round"]), None)
    total = as_number(record.get("bytes_down")) if record else None
    return total / contacts(record) if total is not None and contacts(record) else None


def communication(run: RunData) -> Figure | None:
    """Bytes uploaded and downloaded per round, stacked by tier."""
    up = _per_tier(run, lambda c: as_number(c.get("bytes_up")))
    down = _per_tier(run, lambda c: download_bytes(run, c))
    if not up and not down:
        return None
    rounds = run.rounds
    fig, axes = _figure(11, 3.6, cols=2)
    for ax, table, title in (
        (axes[0], up, "uploaded (clients to server)"),
        (axes[1], down, "downloaded (server to clients)"),
    ):
        bottom = np.zeros(len(rounds))
        for tier in sorted(table):
            values = np.array([sum(table[tier].get(r, [])) / MB for r in rounds])
            ax.bar(rounds, values, bottom=bottom, color=tier_color(tier), label=run.tier_name(tier))
            bottom += values
        if table is down:  # the adapter also went to clients whose update never counted
            total = np.array([(as_number(r.get("bytes_down")) or 0.0) / MB for r in run.metrics])
            lost = np.clip(total - bottom, 0.0, None)
            if lost.max(initial=0.0) > 1e-6 * max(total.max(initial=0.0), 1.0):
                ax.bar(rounds, lost, bottom=bottom, color="#bbbbbb", label="failed / rejected clients")
        ax.set(xlabel="round", ylabel="MB", title=title)
        ax.grid(alpha=0.3, axis="y")
        integer_rounds(ax)
        if table:
            ax.set_ylim(0, max(ax.get_ylim()[1], 1e-9) * 1.25)  # headroom so the legend covers no bar
            ax.legend(fontsize=8, loc="upper left", ncol=min(len(table) + 1, 3))
    return fig


def train_seconds(run: RunData) -> Figure | None:
    """Mean local training seconds per client, per round and tier."""
    table = _per_tier(run, lambda c: as_number(c.get("seconds")))
    if not table:
        return None
    fig, (ax,) = _figure(6.5, 3.6)
    for tier in sorted(table):
        rounds = sorted(table[tier])
        ax.plot(
            rounds,
            [np.mean(table[tier][r]) for r in rounds],
            marker="o",
            markersize=4,
            color=tier_color(tier),
            label=run.tier_name(tier),
        )
    ax.set(xlabel="round", ylabel="seconds per client", title="local training time", ylim=(0, None))
    ax.grid(alpha=0.3)
    integer_rounds(ax)
    ax.legend(fontsize=8)
    return fig


def peak_memory(run: RunData) -> Figure | None:
    """Peak memory per tier (mean and max over client-rounds), when the run profiled it."""
    table = _per_tier(run, lambda c: as_number(c.get("peak_mem_mb")))
    if not table:
        return None
    tiers = sorted(table)
    values = [[v for vs in table[t].values() for v in vs] for t in tiers]
    fig, (ax,) = _figure(6.5, 3.4)
    x = np.arange(len(tiers))
    colors = [tier_color(t) for t in tiers]
    ax.bar(x - 0.2, [np.mean(v) for v in values], width=0.4, color=colors)
    ax.bar(x + 0.2, [np.max(v) for v in values], width=0.4, color=colors, alpha=0.5, hatch="//")
    ax.bar([0], [0], color="#888888", label="mean")  # neutral legend entries: colours mean tiers
    ax.bar([0], [0], color="#888888", alpha=0.5, hatch="//", label="max")
    ax.set_xticks(x, [run.tier_name(t) for t in tiers])
    ax.set(ylabel="peak memory (MB)", title="peak training memory per tier")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return fig


def local_test(run: RunData) -> Figure | None:
    """Personalised evaluation (`federation.local_test`): per round, each sampled client's score on its local test
    split -- the global model it received (blue) and its personalised model (orange), one dot per client -- and
    the weighted mean over clients (line)."""
    scored = [r for r in run.metrics if r.get("local_test")]
    if not scored:
        return None
    fig, (ax,) = _figure(6.5, 3.6)
    styles = {"global": ("#1f77b4", -0.12), "personal": ("#ff7f0e", 0.12)}
    for kind, (color, shift) in styles.items():
        rows = [(r["round"], r["local_test"][kind]) for r in scored if kind in r["local_test"]]
        if not rows:
            continue
        xs = [rnd + shift for rnd, stats in rows for _ in stats["clients"]]
        ys = [v for _, stats in rows for v in stats["clients"].values()]
        ax.scatter(xs, ys, s=14, alpha=0.6, color=color)
        means = [stats["weighted_mean"] for _, stats in rows]
        ax.plot([rnd for rnd, _ in rows], means, marker="_", color=color, label=f"{kind} model (weighted mean)")
    ax.set(xlabel="round", ylabel="score on the local test split", title="per-client local test scores")
    ax.grid(alpha=0.3)
    integer_rounds(ax)
    ax.legend(fontsize=8)
    return fig


def partition(run: RunData) -> Figure | None:
    """Label distribution per client (stacked counts, flwr-datasets style), with each client's tier."""
    stats = run.partition
    if not stats or not stats.get("clients"):
        return None
    clients = sorted(stats["clients"], key=lambda c: c["id"])
    names = stats.get("label_names") or [str(i) for i in range(len(clients[0]["label_counts"]))]
    counts = np.array([c["label_counts"] for c in clients], dtype=float)
    fig, (ax,) = _figure(max(6.5, 0.38 * len(clients) + 2.5), 4.0)
    x = np.arange(len(clients))
    bottom = np.zeros(len(clients))
    colors = _label_colors(len(names))
    for j, name in enumerate(names):
        ax.bar(x, counts[:, j], bottom=bottom, color=colors[j], label=name, width=0.8)
        bottom += counts[:, j]
    step = max(1, len(clients) // 40)
    ax.set_xticks(x[::step], [f"{c['id']}\nT{c['tier']}" for c in clients[::step]], fontsize=7)
    for tick, client in zip(ax.get_xticklabels(), clients[::step], strict=True):
        tick.set_color(tier_color(int(client["tier"])))
    kind = (stats.get("partition") or {}).get("kind", "")
    title = f"label distribution per client ({kind})" if kind else "label distribution per client"
    ax.set(xlabel="client id / tier", ylabel="samples", title=title)
    ax.legend(fontsize=8, title="label", bbox_to_anchor=(1.01, 1), loc="upper left")
    return fig


def _label_colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]
