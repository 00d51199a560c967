"""Results of a grid from hand-made run folders (no training): per-cell metrics, the torn-line reader, the
weak-tier resource ratios, the paired table, results.csv, cells.csv and the frontier plot."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from fedhello.compare.cells import accuracy_metrics, full_rank_strategy, read_metrics
from fedhello.compare.grid import Cell, same_config
from fedhello.compare.ratios import PARTIAL_PLAN_STRATEGIES, ResourceCell, partition_ratios, step_key, weak_tiers
from fedhello.compare.results import collect, write_results
from fedhello.errors import FedHelloError
from fedhello.methods import method_config

TIERS = [{"share": "1/2", "layers": 1}, {"share": "1/2", "layers": 4}]
# per method: final accuracy per seed, and what its clients record (tier, layers, peak MiB, CPU step s)
FINAL = {
    "fedit": {1: 0.80, 2: 0.81, 3: 0.82},
    "straggler": {1: 0.70, 2: 0.72, 3: 0.71},  # loses on every seed: a clear difference
    "hetlora": {1: 0.79, 2: 0.83, 3: 0.80},  # -1, +2, -2 points: a tie
    "exclusive": {1: 0.60, 2: 0.62},  # seed 3 unfinished: one unmatched reference seed
}
CLIENTS = {
    "fedit": [(0, [0, 1, 2, 3], 100.0, 1.0), (1, [0, 1, 2, 3], 110.0, 1.2)],
    "straggler": [(0, [0], 42.0, 0.55), (1, [0], 42.0, 0.55)],
    # all layers but rank-reduced: cheap, and not a full-rank reference
    "hetlora": [(0, [0, 1, 2, 3], 10.0, 0.1), (1, [0, 1, 2, 3], 10.0, 0.1)],
    "exclusive": [(1, [0, 1, 2, 3], 105.0, 1.1)],  # weak clients never train: no weak-tier entry
}


def make_cell(root: Path, method: str, seed: int, final: float, torn: bool = False) -> Cell:
    config = method_config({"seed": seed, "tiers": TIERS, "name": f"p-{method}-s{seed}"}, method)
    cell = Cell("p", method, seed, config, root / "p" / method / f"seed{seed}")
    cell.run_dir.mkdir(parents=True)
    (cell.run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
    (cell.run_dir / "summary.json").write_text("{}")
    clients = [
        {"id": i, "tier": tier, "layers": layers, "peak_mem_mb": mem, "step_seconds": 9.0, "step_cpu_seconds": cpu}
        for i, (tier, layers, mem, cpu) in enumerate(CLIENTS[method])
    ]
    accuracies = [final + 0.1 if seed == 1 else final - 0.05, None, final - 0.02, final]
    records = [
        {
            "round": r + 1,
            "accuracy": acc,
            "bytes_up": 2_000_000,
            "train_seconds": 1.5,
            "wall_seconds": 2.0,
            "clients": clients,
            **({"macro_f1": final - 0.1} if r == 3 and method != "exclusive" else {}),
        }
        for r, acc in enumerate(accuracies)
    ]
    text = "".join(json.dumps(r) + "\n" for r in records)
    (cell.run_dir / "metrics.jsonl").write_text(text + ('{"round": 5, "accur' if torn else ""))
    return cell


@pytest.fixture
def grid(tmp_path):
    cells = []
    for method in FINAL:
        for seed in (1, 2, 3):
            if seed in FINAL[method]:
                cells.append(make_cell(tmp_path, method, seed, FINAL[method][seed], torn=method == "hetlora"))
            else:
                cells.append(
                    Cell(
                        "p",
                        method,
                        seed,
                        method_config({"seed": seed, "tiers": TIERS}, method),
                        tmp_path / "p" / method / f"seed{seed}",
                    )
                )
    return cells


def read_csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_torn_last_line_is_skipped_but_a_damaged_middle_line_is_an_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"round": 1, "accuracy": 0.5}\n{"round": 2, "accuracy": 0.6}\n{"round": 3, "acc')
    assert [r["round"] for r in read_metrics(path)] == [1, 2]
    path.write_text('{"round": 1, "accuracy": 0.5}\n\n{"round": 2, "accuracy": 0.6}\n\n')
    assert len(read_metrics(path)) == 2
    path.write_text('{"round": 1, "accu\n{"round": 2, "accuracy": 0.6}\n')
    with pytest.raises(FedHelloError, match="line 1"):
        read_metrics(path)


def test_accuracy_metrics_final_last_k_macro_f1_best():
    records = [
        {"round": 1, "accuracy": 0.9},
        {"round": 2, "accuracy": None},
        {"round": 3, "accuracy": 0.6},
        {"round": 4, "accuracy": 0.7, "macro_f1": 0.5},
    ]
    got = accuracy_metrics(records, last_k=2)
    assert got["final"] == 0.7 and got["best"] == 0.9 and got["macro_f1"] == 0.5
    assert got["last_k_mean"] == pytest.approx(0.65) and got["curve"] == [(1, 0.9), (3, 0.6), (4, 0.7)]
    assert accuracy_metrics(records, last_k=10)["last_k_mean"] == pytest.approx(0.7333333)
    assert accuracy_metrics(records[:3], last_k=3)["macro_f1"] is None  # causal-LM runs record none


def test_resource_ratios_against_the_full_rank_all_layer_median():
    def entry(tier, layers, mem, cpu=None, wall=1.0):
        return {
            "tier": tier,
            "layers": layers,
            "peak_mem_mb": mem,
            "step_seconds": wall,
            **({"step_cpu_seconds": cpu} if cpu is not None else {}),
        }

    tiers = [{"layers": 1}, {"layers": 2}, {"layers": 4}]
    full = ResourceCell("full", tiers, [entry(2, [0, 1, 2, 3], 100, 2.0), entry(0, [0, 1, 2, 3], 120, 2.0)])
    # ranks / a frozen factor make all-layer entries cheap: they must not lower the reference
    ranked = ResourceCell("tier_rank", tiers, [entry(0, [0, 1, 2, 3], 1, 0.1)] * 5)
    partial = ResourceCell(
        "gd",
        tiers,
        [entry(0, [0], 33, 0.5), entry(0, [0], 99, 0.5), entry(1, [0, 1], 55, 1.1), entry(2, [0, 1, 2, 3], 110, 2.0)],
    )
    ratios = partition_ratios([full, ranked, partial])
    # reference memory: median(100, 120) = 110; step: 2.0 (CPU time, every entry has it)
    assert ratios[0].memory == pytest.approx(120 / 110) and ratios[0].step == pytest.approx(1.0)
    assert ratios[1].memory == pytest.approx(1 / 110)
    # weak tiers 0 (median 66) and 1 (55): the worse one counts
    assert ratios[2].memory == pytest.approx(66 / 110) and ratios[2].step == pytest.approx(1.1 / 2.0)
    assert weak_tiers(tiers, 4) == [0, 1]
    assert weak_tiers([{"layers": None, "memory_mb": 500}, {"layers": None}], 4) == [0]  # no budget = strongest
    assert weak_tiers([{"layers": 2}, {"layers": 2}], 4) == []
    assert step_key([entry(0, [0], 1, 0.5), entry(0, [0], 1)]) == "step_seconds"  # mixed: wall time for all
    # no resource records, or no full-rank all-layer client: no ratio
    bare = ResourceCell("full", tiers, [{"tier": 0, "layers": [0, 1, 2, 3]}])
    assert partition_ratios([bare])[0].memory is None
    # L = 4 from the tiers even when no client trained layer 3
    assert partition_ratios([ResourceCell("gd", tiers, partial.clients[:3])])[0].memory is None


def test_full_rank_plans_follow_the_allocators_upload_declarations():
    from fedhello.allocation import ALLOCATORS

    assert {name for name in ALLOCATORS.names() if not full_rank_strategy(name)} == PARTIAL_PLAN_STRATEGIES
    assert full_rank_strategy("no-such-strategy") is None
    assert ResourceCell("legend", [], []).full_rank_plans is False  # the fallback for unregistered names
    assert ResourceCell("legend", [], [], full_rank=True).full_rank_plans is True


def test_collect_pairs_by_seed_and_fills_ratios(grid):
    rows = {r.method: r for r in collect(grid, reference="fedit", last_k=3)}
    assert list(rows) == list(FINAL)
    fedit, straggler, hetlora, exclusive = (rows[m] for m in FINAL)
    assert fedit.is_reference and fedit.delta is None and fedit.values("final") == [0.80, 0.81, 0.82]
    assert fedit.values("best")[0] == pytest.approx(0.90)  # seed 1 peaked early: best is not the headline
    assert not straggler.delta.tie and straggler.delta.mean == pytest.approx(-0.10)
    assert hetlora.delta.tie and hetlora.delta.differences == pytest.approx([-0.01, 0.02, -0.02])
    assert exclusive.delta.seeds == [1, 2] and exclusive.delta.unmatched == 1
    assert len(hetlora.cells) == 3  # the torn last line of its metrics.jsonl is skipped
    # full reference = median of fedit's 100 / 110 and exclusive's 105 MiB all-layer entries = 105 (hetlora's
    # 10 MiB are not full-rank); step time 1.1 s
    assert fedit.mean("weak_mem_ratio") == pytest.approx(100 / 105)
    assert straggler.mean("weak_mem_ratio") == pytest.approx(42 / 105)
    assert straggler.mean("weak_step_ratio") == pytest.approx(0.55 / 1.1)  # CPU step time, not the wall 9 s
    assert exclusive.mean("weak_mem_ratio") is None


def test_results_files_have_paired_columns_cells_and_frontier(grid, tmp_path):
    paths = write_results(grid, tmp_path, "fedhello compare x.yaml", reference="fedit", last_k=3, elapsed_seconds=12.0)
    table = paths["md"].read_text()
    assert (
        "| method | final acc | last-3 acc | macro-F1 | Δ final vs fedit [95 % CI] | rounds to 95 % | MB until "
        "| weakest tier T0 (1 layer): memory / step / over budget | upload MB/round | seeds |"
    ) in table
    # fedit reaches 95 % of its own final accuracy in rounds 1, 3, 3 (2, 6, 6 MB uploaded); its all-layer plans
    # on the 1-layer tier: largest 100 MiB / 105, CPU 1.0 s / 1.1, and every one of the 12 is over budget
    assert (
        "| fedit | **81.0 ± 1.0** | " in table
        and "| reference | 2.3 | 4.67 | 0.95 / 0.91 / 12 of 12 | 2.00 | 3 |" in table
    )
    hetlora = next(line for line in table.splitlines() if line.startswith("| hetlora |"))
    straggler = next(line for line in table.splitlines() if line.startswith("| straggler |"))
    exclusive = next(line for line in table.splitlines() if line.startswith("| exclusive |"))
    assert "**tie** -0.3 [" in hetlora and "tie" not in straggler and "-10.0 [" in straggler
    # ±2.5 points is wider than the default ±1.5: the table says how many seeds would narrow it
    assert "(±2.5: needs ~5 seeds)" in straggler
    # straggler reaches 95 % of fedit's final (0.76, 0.7695, 0.779) on seed 1 in round 1 only
    assert "| 1.0 (2/3 never) | 2.00 | 0.40 / 0.50 / 0 of 12 |" in straggler
    columns = [c.strip() for c in exclusive.split("|")[1:-1]]
    assert columns[1] == "61.0 ± 1.4" and columns[3] == "–"  # no macro-F1 recorded
    assert columns[5:] == ["never (2/2)", "–", "no plans", "2.00", "2"]  # its weak clients never train
    assert "the interval contains 0" in table and "1 unpaired seed left out" in table
    assert "the 11 finished cells' runs took 88 s" in table and "this invocation took 12 s" in table
    assert "![accuracy per round on p, mean ± std over seeds](accuracy_p.png)" in table
    assert "](frontier_p.png)" in table

    rows = {r["method"]: r for r in read_csv(paths["csv"])}
    assert rows["hetlora"]["tie"] == "True" and rows["straggler"]["tie"] == "False"
    assert float(rows["fedit"]["final_mean"]) == pytest.approx(0.81) and rows["fedit"]["delta_final_mean"] == ""
    assert float(rows["fedit"]["best_mean"]) > float(rows["fedit"]["final_mean"])
    assert rows["straggler"]["seeds_needed"] == "5" and rows["straggler"]["target_never"] == "2"
    assert float(rows["straggler"]["tier0_max_mem_ratio"]) == pytest.approx(42 / 105)
    assert rows["fedit"]["tier0_over_budget"] == "12" and rows["exclusive"]["tier0_plans"] == "0"
    assert rows["fedit"]["local_personal_mean"] == "", "no personalised evaluation in these runs"
    cells = read_csv(paths["cells"])
    assert len(cells) == 11 and list(cells[0]) == [
        "partition",
        "method",
        "seed",
        "final",
        "last_k_mean",
        "macro_f1",
        "best",
        "local_global",
        "local_personal",
        "rounds_to_target",
        "mb_to_target",
        "target_reached",
        "weak_mem_ratio",
        "weak_step_ratio",
        "worst_mem_ratio",
        "worst_step_ratio",
        "tier0_max_mem_ratio",
        "tier0_max_train_mem_ratio",
        "tier0_max_step_ratio",
        "tier0_over_budget",
        "tier0_plans",
        "wall_seconds",
    ]
    assert [(c["method"], c["seed"]) for c in cells[:4]] == [
        ("fedit", "1"),
        ("fedit", "2"),
        ("fedit", "3"),
        ("straggler", "1"),
    ]
    assert [(c["rounds_to_target"], c["mb_to_target"]) for c in cells[:3]] == [("1", "2.0"), ("3", "6.0"), ("3", "6.0")]
    assert paths["frontier:p"].stat().st_size > 1000 and paths["png:p"].stat().st_size > 1000


def test_a_one_client_cell_gives_dashes(tmp_path):
    """`centralized`: one client with all the training data, one tier: no weak tier, so dashes, no crash."""
    cells = [make_cell(tmp_path, "fedit", seed, FINAL["fedit"][seed]) for seed in (1, 2)]
    for seed in (1, 2):
        config = method_config(
            {
                "seed": seed,
                "tiers": [{"share": 1.0, "layers": 4}],
                "federation": {"num_clients": 1, "clients_per_round": 1},
            },
            "fedit",
        )
        cell = Cell("p", "centralized", seed, config, tmp_path / "p" / "centralized" / f"seed{seed}")
        cell.run_dir.mkdir(parents=True)
        (cell.run_dir / "config.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json")))
        (cell.run_dir / "summary.json").write_text("{}")
        client = {
            "id": 0,
            "tier": 0,
            "layers": [0, 1, 2, 3],
            "peak_mem_mb": 101.0,
            "step_seconds": 1.0,
            "step_cpu_seconds": 1.0,
        }
        records = [{"round": r, "accuracy": 0.85, "bytes_up": 1_000_000, "clients": [client]} for r in (1, 2)]
        (cell.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        cells.append(cell)
    paths = write_results(cells, tmp_path / "out", reference="fedit")
    line = next(x for x in paths["md"].read_text().splitlines() if x.startswith("| centralized |"))
    columns = [c.strip() for c in line.split("|")[1:-1]]
    assert columns[5:8] == ["1.0", "1.00", "–"]  # reaches fedit's 95 % in round 1 (1 MB); no weak tier
    row = next(r for r in read_csv(paths["csv"]) if r["method"] == "centralized")
    assert row["worst_mem_ratio"] == "" and row["tier0_max_mem_ratio"] == "" and row["tier0_plans"] == ""
    assert "frontier:p" in paths  # drawn for fedit; centralized is named as having no weak-tier plan


def test_budget_tier_layers_filled_in_by_the_run_still_count_as_the_same_config():
    wanted = {"seed": 1, "tiers": [{"layers": None, "memory_mb": 100.0}, {"layers": 4, "memory_mb": None}]}
    assert same_config(
        {"seed": 1, "tiers": [{"layers": 2, "memory_mb": 100.0}, {"layers": 4, "memory_mb": None}]}, wanted
    )
    assert not same_config(
        {"seed": 1, "tiers": [{"layers": 2, "memory_mb": 100.0}, {"layers": 3, "memory_mb": None}]}, wanted
    )
    assert not same_config(None, wanted)


def test_the_mib_a_memory_fraction_stands_for_still_counts_as_the_same_config():
    # the run writes memory_mb from the measured profile (the bench's tiers): the cell is finished, not stale
    wanted = {"tiers": [{"layers": None, "memory_mb": None, "memory_fraction": 0.45}, {"layers": 6}]}
    saved = {"tiers": [{"layers": 2, "memory_mb": 39.6, "memory_fraction": 0.45}, {"layers": 6}]}
    assert same_config(saved, wanted)
    other = {"tiers": [{"layers": 2, "memory_mb": 39.6, "memory_fraction": 0.5}, {"layers": 6}]}
    assert not same_config(other, wanted)


def test_a_cell_carries_the_last_personalised_evaluation():
    """`federation.local_test` runs: the cell's local_global / local_personal are the last record's weighted means
    (records without local test scores in between do not reset them); runs without them give None."""
    records = [
        {
            "round": 1,
            "accuracy": 0.5,
            "local_test": {"global": {"weighted_mean": 0.4}, "personal": {"weighted_mean": 0.7}},
        },
        {"round": 2, "accuracy": 0.6, "local_test": {"global": {"weighted_mean": 0.45}}},
        {"round": 3, "accuracy": None},
    ]
    got = accuracy_metrics(records, last_k=2)
    assert (got["local_global"], got["local_personal"]) == (0.45, None)
    assert accuracy_metrics(records[:1], last_k=2)["local_personal"] == 0.7
    assert accuracy_metrics([{"round": 1, "accuracy": 0.5}], last_k=1)["local_global"] is None


def test_personalised_scores_are_tabulated_and_paired_with_the_reference(tmp_path):
    """With `federation.local_test`, the table gets the clients' scores on their own test splits, and the paired
    difference compares each method's own models (personalised where it has them) with the reference's global
    model on the same seed: here +10, +12, +8 points."""
    from fedhello.compare.results import results_markdown

    local = {"fedit": {1: (0.70, None), 2: (0.72, None), 3: (0.71, None)},
             "straggler": {1: (0.50, 0.80), 2: (0.52, 0.84), 3: (0.51, 0.79)}}
    cells = []
    for method, seeds in local.items():
        for seed, (global_score, personal) in seeds.items():
            cell = make_cell(tmp_path, method, seed, FINAL[method][seed])
            records = [json.loads(line) for line in (cell.run_dir / "metrics.jsonl").read_text().splitlines()]
            scores = {"global": {"weighted_mean": global_score}}
            if personal is not None:
                scores["personal"] = {"weighted_mean": personal}
            records[-1]["local_test"] = scores
            (cell.run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            cells.append(cell)
    rows = {r.method: r for r in collect(cells, reference="fedit", last_k=3)}
    delta = rows["straggler"].local_delta
    assert delta.differences == pytest.approx([0.10, 0.12, 0.08]) and not delta.tie
    assert rows["fedit"].local_delta is None
    table = results_markdown(list(rows.values()))
    assert "| straggler | 51.0 ± 1.0 | 81.0 ± 2.6 | +10.0 [+5.0, +15.0] (±5.0: needs ~" in table
    assert "| fedit | 71.0 ± 1.0 | – | reference | 3 |" in table
