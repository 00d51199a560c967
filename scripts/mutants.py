"""Mutation check: every planted bug below must make the tests that guard against it fail.

A mutant is an exact text replacement in one file (the text must occur exactly once) and the pytest selection
that should catch it. The script copies the working tree (tracked and untracked, not ignored files) to a
temporary folder, checks that each selection passes there unmutated, then applies one mutant at a time, runs
its selection with `PYTHONPATH` on the copy's `src`, and restores the file. A failing selection kills the
mutant; a passing one lets it survive (the tests cannot see that bug). The repository itself is never touched.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/mutants.py                 # all mutants (~6 min on 2 cores)
    .venv/bin/python scripts/mutants.py --only loopback-prefix --list     # list, or pick mutants by name

Adding a mutant: append a `Mutant` to `MUTANTS` -- a short name, the file, the exact old and new text, and
the pytest arguments that should fail. Exit status: 0 when every mutant is killed, 1 otherwise (a mutant whose
text is no longer in its file, or whose selection fails unmutated, counts as not killed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Mutant:
    """One planted bug: replace `old` (exactly once in `file`) by `new`; `tests` (pytest arguments) must fail."""

    name: str
    issue: str  # where the bug was found, e.g. "22.1"
    file: str  # relative to the repository root
    old: str
    new: str
    tests: tuple[str, ...]


MUTANTS: list[Mutant] = [
    Mutant(
        "labels-encoded-per-split",
        "22.1",
        "src/fedhello/data/sources.py",
        "    loaded = encode_labels(loaded, cfg.label_column)  # one class list for every split\n",
        "    if not isinstance(loaded['train'].features[cfg.label_column], ClassLabel):\n"
        "        loaded = loaded.class_encode_column(cfg.label_column)\n",
        ("tests/data/test_sources.py",),
    ),
    Mutant(
        "unlabelled-row-is-last-class",
        "22.2",
        "src/fedhello/data/node.py",
        "return feature.names[value] if 0 <= value < len(feature.names) else None",
        "return feature.names[value]",
        ("tests/data/test_node_data.py",),
    ),
    Mutant(
        "bad-labels-drop-ignored",
        "22.2 / 23",
        "src/fedhello/data/node.py",
        "    keep = [i for i, name in enumerate(names) if name in ids]\n",
        "    keep = list(range(len(names)))\n",
        ("tests/data/test_node_data.py",),
    ),
    Mutant(
        "data-path-ignored",
        "22.3",
        "src/fedhello/data/sources.py",
        "    check_path(cfg)\n    return source(cfg, seed)",
        "    return source(cfg, seed)",
        ("tests/data/test_sources.py", "tests/test_bad_inputs.py", "-k", "ignore"),
    ),
    Mutant(
        "claims-median-counts-zeros",
        "22.4",
        "src/fedhello/server/validation.py",
        "claims = {i: u.num_samples for i, u in enumerate(updates) if u.num_samples > 0}",
        "claims = {i: u.num_samples for i, u in enumerate(updates)}",
        ("tests/server/test_validation.py", "-k", "mostly_empty or median"),
    ),
    Mutant(
        "norm-median-counts-zeros",
        "22.4",
        "src/fedhello/server/validation.py",
        "        return {i: change for i, change in changes.items() if change > 0}",
        "        return {i: self.change_rms(u, global_state) for i, u in enumerate(updates)}",
        ("tests/server/test_validation.py", "-k", "mostly_empty or norm"),
    ),
    Mutant(
        "zero-sample-updates-weighted",
        "22.4",
        "src/fedhello/server/coordinator.py",
        "        trained = [u for u in updates if u.num_samples > 0]\n",
        "        trained = list(updates)\n",
        ("tests/server/test_validation.py", "-k", "weight"),
    ),
    Mutant(
        "small-round-unbounded-silently",
        "22.4",
        "src/fedhello/server/loop.py",
        "    outcome.warnings = validator.unbounded(wellformed, global_state)\n",
        "    outcome.warnings = []\n",
        ("tests/server/test_validation.py", "-k", "too_small"),
    ),
    Mutant(
        "pruned-components-sent-as-zeros",
        "22.5",
        "src/fedhello/methods/hetlora/client.py",
        "            tensors[a_name] = truncate(a_name, tensors[a_name], k)\n"
        "            tensors[b_name] = truncate(b_name, tensors[b_name], k)\n",
        "            tensors[a_name][k:rank] = 0\n            tensors[b_name][:, k:rank] = 0\n",
        ("tests/methods/test_hetlora.py", "tests/training/test_ranks.py", "-k", "prun"),
    ),
    Mutant(
        "pruned-ranks-refused-by-validation",
        "22.5",
        "src/fedhello/server/loop.py",
        "        pruned_ranks=config.strategy.sends_lower_ranks,",
        "        pruned_ranks=False,",
        ("tests/training/test_ranks.py", "-k", "pass_validation"),
    ),
    Mutant(
        "benchmark-credits-whole-data",
        "22.6",
        "benchmarks/_common.py",
        "    return sum(len(g) for g in chosen), sum(sum(g) for g in chosen)",
        "    return sum(len(g) for g in chosen), num_samples",
        ("tests/test_benchmarks.py",),
    ),
    Mutant(
        "loopback-prefix",
        "22.7",
        "src/fedhello/engines/flower/security.py",
        '    if host.lower() == "localhost":',
        '    if host.lower().startswith("localhost"):',
        ("tests/engines/test_flower_security.py", "-k", "plain_http"),
    ),
    Mutant(
        "resume-skips-aggregator-state",
        "22.8",
        "src/fedhello/server/resume.py",
        "    if checkpoint.aggregator_state is not None:\n"
        "        coordinator.aggregator.load_state_dict(checkpoint.aggregator_state)\n",
        "",
        ("tests/server/test_checkpoint.py", "-k", "fed_pilot"),
    ),
    Mutant(
        "fedpilot-load-resets-counts",
        "22.8",
        "src/fedhello/methods/fed_pilot/aggregator.py",
        '        self.counts = {str(k): float(v) for k, v in (state.get("counts") or {}).items()}',
        "        self.counts = {}",
        ("tests/methods/test_fed_pilot.py",),
    ),
    Mutant(
        "self-prune-reported-not-applied",
        "22.8",
        "src/fedhello/methods/hetlora/client.py",
        "            tensors[a_name] = truncate(a_name, tensors[a_name], k)\n"
        "            tensors[b_name] = truncate(b_name, tensors[b_name], k)\n",
        "",
        ("tests/training/test_ranks.py", "-k", "upload"),
    ),
    Mutant(
        "node-nf4-loads-full-precision-first",
        "22.8",
        "src/fedhello/engines/flower/clientapp.py",
        "            build.model.quantization = node_quantization\n",
        "",
        ("tests/engines/test_flower_clientapp.py",),
    ),
    Mutant(
        "tier-quantization-overrides-node",
        "22.8",
        "src/fedhello/engines/flower/clientapp.py",
        "quantization = self.node_quantization or resolve_quantization(tier.quantization, self.config)",
        "quantization = resolve_quantization(tier.quantization, self.config) or self.node_quantization",
        ("tests/engines/test_flower_clientapp.py",),
    ),
    Mutant(
        "estimate-drops-16-bit-output-copy",
        "22.8",
        "src/fedhello/resources/estimate.py",
        '        logits = (logits[0] + ", 16-bit copy of the output layer", logits[1] + dims.vocab * h * 2)',
        "        pass",
        ("tests/tasks/test_memory_estimate.py",),
    ),
    Mutant(
        "classifier-head-quantized",
        "22.8",
        "src/fedhello/models/quantize.py",
        "    skip = list(config.lora.head_modules) or None",
        "    skip = []",
        ("tests/models/test_quantize.py", "-k", "classifier"),
    ),
    Mutant(
        "round-loss-not-recorded",
        "22.8",
        "src/fedhello/server/loop.py",
        '        "loss": evaluation["loss"] if evaluation else None,',
        '        "loss": None,',
        ("tests/models/test_quantize.py", "-k", "one_round"),
    ),
    Mutant(
        "dev-install-skips-chromium",
        "22.8",
        "scripts/install.sh",
        '  extras="[dev]"\n  install_chromium\n',
        '  extras="[dev]"\n',
        ("tests/test_cli.py", "-k", "ci_runs"),
    ),
    Mutant(
        "ci-run-without-ci-set",
        "22.8",
        ".ci/run",
        'export CI="${CI:-1}"\n',
        "",
        ("tests/test_cli.py", "-k", "ci_runs"),
    ),
    Mutant(
        "browser-test-skips-in-ci",
        "22.8",
        "tests/reporting/test_report_browser.py",
        '    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")',
        "    return False",
        ("tests/reporting/test_report_browser.py::test_a_missing_browser_fails_in_ci",),
    ),
    Mutant(
        "unpaired-interval",
        "22 tests",
        "src/fedhello/compare/stats.py",
        "    diffs = [float(method_values[s]) - float(reference_values[s]) for s in seeds]\n",
        "    ref = sum(float(reference_values[s]) for s in seeds) / len(seeds)\n"
        "    diffs = [float(method_values[s]) - ref for s in seeds]\n",
        ("tests/compare/test_stats.py",),
    ),
    Mutant(
        "knapsack-stops-at-first-feasible-lowest",
        "22 tests",
        "src/fedhello/allocation/knapsack.py",
        "        if best_key is None or key > best_key:\n            best, best_key = chosen, key\n",
        "        if best_key is None or key > best_key:\n            best, best_key = chosen, key\n        break\n",
        ("tests/allocation/test_budget_true.py", "tests/resources/test_cost_model.py"),
    ),
    Mutant(
        "fill-one-layer-over-budget",
        "22 tests",
        "src/fedhello/allocation/knapsack.py",
        "        count = next((n for n in range(len(above), 0, -1) if fits(n, lowest)), 0)\n",
        "        count = next((n for n in range(len(above), 0, -1) if fits(n - 1, lowest)), 0)\n",
        ("tests/allocation/test_budget_true.py", "tests/resources/test_cost_model.py"),
    ),
    Mutant(
        "knapsack-adds-zero-valued-layers",
        "22.9",
        "src/fedhello/allocation/knapsack.py",
        "        count = min(count, sum(values[i] > 0 for i in above))  # worthless layers add cost, not value\n",
        "",
        ("tests/allocation/test_budget_true.py",),
    ),
    Mutant(
        "auto-quantization-by-layer-count",
        "22 tests",
        "src/fedhello/resources/cost.py",
        "        key=lambda o: (reachable_depth(options[o], num_layers), options[o].max_layers, -order.index(o)),",
        "        key=lambda o: (options[o].max_layers, -order.index(o)),",
        ("tests/resources/test_cost_model.py",),
    ),
    Mutant(
        "depth-aware-judges-by-the-largest-counts-floor",
        "22.4 (depth_aware)",
        "src/fedhello/resources/cost.py",
        "        return not chosen or self.fits(len(chosen), min(chosen))",
        "        return not chosen or (len(chosen) <= self.max_layers and min(chosen) >= self.min_layer)",
        ("tests/resources/test_cost_model.py", "tests/allocation/test_budget_true.py"),
    ),
    Mutant(
        "time-budget-ignores-grad-accum",
        "22.5",
        "src/fedhello/resources/budgets.py",
        "            micro_batches=config.train.grad_accum,",
        "            micro_batches=1,",
        ("tests/resources/test_profiler.py", "tests/resources/test_budgets_hold.py"),
    ),
    Mutant(
        "recompute-plan-not-applied",
        "21",
        "src/fedhello/training/trainer.py",
        "        if blocks:\n            set_recompute(self.model, blocks)\n",
        "",
        ("tests/training/test_recompute.py",),
    ),
    Mutant(
        "store-hands-back-the-round-being-trained",
        "25.2",
        "src/fedhello/training/store.py",
        "if k < before_round]",
        "if k <= before_round]",
        ("tests/training/test_store.py",),
    ),
    Mutant(
        "personal-part-not-restored",
        "25.2",
        "src/fedhello/training/trainer.py",
        "            if own is not None:\n",
        "            if own is not None and False:\n",
        ("tests/methods/test_personalised.py", "-k", "kept_part"),
    ),
    Mutant(
        "resume-keeps-the-crashed-rounds-state",
        "25.2",
        "src/fedhello/engines/local.py",
        "store.discard_after(resumed_round(run_dir))",
        "store.discard_after(resumed_round(run_dir) + 1)",
        ("tests/methods/test_personalised.py", "-k", "resumed"),
    ),
]


def copy_tree(root: Path, dest: Path) -> None:
    """The working tree's files (tracked, and untracked ones git does not ignore) under `dest`."""
    listed = (
        subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        source = root / name
        if source.is_file():  # a deleted, not yet staged file is still listed
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def run_tests(tree: Path, args: tuple[str, ...], timeout: float) -> tuple[bool, float, str]:
    """(passed, seconds, last output line) of `pytest -x -q ARGS` in `tree` on its own sources."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *args]
    started = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - started, f"timed out after {timeout:.0f} s"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode == 0, time.perf_counter() - started, lines[-1] if lines else proc.stderr[-200:]


def check_imports(tree: Path) -> None:
    """Refuse to run when the copy's `fedhello` is not the one Python imports (e.g. an editable install wins)."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    found = subprocess.run(
        [sys.executable, "-c", "import fedhello; print(fedhello.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"error: with PYTHONPATH on the copy, Python imports fedhello from {found}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=None, help="mutant names to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per pytest run (a timeout kills)")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if args.only is None or m.name in args.only]
    unknown = sorted(set(args.only or []) - {m.name for m in MUTANTS})
    if unknown:
        raise SystemExit(f"error: unknown mutant(s) {unknown} (fix: one of {[m.name for m in MUTANTS]})")
    if args.list:
        for m in chosen:
            print(f"{m.name:<38} {m.issue:<10} {m.file}  ->  pytest {' '.join(m.tests)}")
        return 0
    root = Path(__file__).resolve().parents[1]
    counts = {"killed": 0, "survived": 0, "stale": 0, "invalid": 0}
    with tempfile.TemporaryDirectory(prefix="fedhello-mutants-") as tmp:
        tree = Path(tmp)
        copy_tree(root, tree)
        check_imports(tree)
        baseline: dict[tuple[str, ...], tuple[bool, str]] = {}
        for m in chosen:
            if m.tests not in baseline:
                passed, seconds, last = run_tests(tree, m.tests, args.timeout)
                baseline[m.tests] = (passed, last)
                print(
                    f"baseline {'pass' if passed else 'FAIL'} ({seconds:.0f} s): pytest {' '.join(m.tests)}", flush=True
                )
        for m in chosen:
            path = tree / m.file
            original = path.read_text()
            if original.count(m.old) != 1:
                counts["stale"] += 1
                print(f"STALE    {m.name}: its text occurs {original.count(m.old)} times in {m.file}", flush=True)
                continue
            if not baseline[m.tests][0]:
                counts["invalid"] += 1
                print(f"INVALID  {m.name}: its tests fail unmutated ({baseline[m.tests][1]})", flush=True)
                continue
            try:
                path.write_text(original.replace(m.old, m.new))
                passed, seconds, last = run_tests(tree, m.tests, args.timeout)
            finally:
                path.write_text(original)
            outcome = "survived" if passed else "killed"
            counts[outcome] += 1
            print(f"{outcome.upper():<8} {m.name} ({m.issue}, {seconds:.0f} s): {last}", flush=True)
    total = sum(counts.values())
    print(
        f"{counts['killed']} of {total} mutants killed, {counts['survived']} survived"
        + "".join(f", {counts[k]} {k}" for k in ("stale", "invalid") if counts[k])
    )
    return 0 if counts["killed"] == total else 1


if __name__ == "__main__":
    sys.exit(main())
