"""Plain-text tables for `fedhello profile`: the per-tier cost table and the budget check of a run."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from fedhello.config import RunConfig
from fedhello.models.quantize import resolve as resolve_quantization
from fedhello.patterns import PATTERNS
from fedhello.resources.cost import LayerConstraint
from fedhello.resources.measure import Measurement
from fedhello.resources.profile import SET_KINDS, Profile


def machine_line() -> str:
    """Cores, CPU model and current load, to print next to any timing."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{os.cpu_count()} cores, {model}, load average {load:.2f}"


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None, ref: float | None) -> str:
    return "n/a" if value is None or not ref else f"{value / ref:.2f}"


def _row(m: Measurement, ref: Measurement | None, num_layers: int, label: str) -> str:
    layers = " ".join(map(str, m.layers)) or "-"
    lowest = str(min(m.layers)) if m.layers else "-"
    return (
        f"  {label:<26} {layers:<14} {lowest:>6} {_fmt(m.peak_mb):>9} {_ratio(m.peak_mb, ref and ref.peak_mb):>6}"
        f" {_fmt(m.step_seconds, 3):>8} {_ratio(m.step_seconds, ref and ref.step_seconds):>6}"
        f" {_fmt(m.cpu_seconds, 3):>8} {_ratio(m.cpu_seconds, ref and ref.cpu_seconds):>6}"
    )


def format_profile(profile: Profile, config: RunConfig, constraints: list[LayerConstraint | None], source: str) -> str:
    """Per tier: every representative set of the tier's size with its peak memory and step time, both
    also as a ratio of training all layers; then the fitted cost models and the budget conversions."""
    num_layers = profile.num_layers
    full = profile.find(range(num_layers))
    head = profile.find(())
    steps, warmup = profile.meta.get("steps", "?"), profile.meta.get("warmup", "?")
    weights = "n/a" if profile.weights_mb is None else f"{profile.weights_mb:.1f} MiB"
    lines = [
        f"base weights {profile.quantization}: the loaded model holds {weights}",
        f"model {config.model.name_or_path}: {num_layers} layers, LoRA r={config.lora.r} on "
        f"{','.join(config.lora.target_modules)}, batch {'x'.join(map(str, profile.batch_shape))} (samples x tokens),"
        f" device {profile.device}",
        f"peak memory: {profile.memory_method}",
        f"step time: median of {steps} steps after {warmup} warm-up step(s), wall clock (step s) and CPU time of"
        f" this process (cpu s, robust when the machine is shared); profile {source},"
        f" measured {profile.meta.get('created', '?')}",
        f"machine now: {machine_line()}",
        "",
        f"  {'set':<26} {'layers':<14} {'lowest':>6} {'peak MiB':>9} {'x all':>6} {'step s':>8} {'x all':>6}"
        f" {'cpu s':>8} {'x all':>6}",
    ]
    for m, label in (
        (full, "all"),
        (profile.find(range(num_layers), num_layers - 1), "all, recompute"),
        (head, "head only"),
    ):
        if m is not None:
            lines.append(_row(m, full, num_layers, label))
    for i, tier in enumerate(config.tiers):
        k = tier.layers
        budget = ", ".join(
            f"{name} {value:g}"
            for name, value in (
                ("memory_mb", tier.memory_mb),
                ("total_memory_mb", tier.total_memory_mb),
                ("s/step", tier.seconds_per_step),
            )
            if value
        )
        loads = resolve_quantization(tier.quantization, config)
        if loads != profile.quantization:
            budget += f"{'; ' if budget else ''}loads {loads}: its budget is in that table"
        lines.append(f"tier {i} (share {tier.share:.2f}, {k} of {num_layers} layers{'; ' + budget if budget else ''}):")
        for kind, pattern in SET_KINDS.items():
            layers = PATTERNS[pattern](num_layers, k) if k else None
            if layers is None:
                continue
            name = f"{kind}-{k}" + (f" ({pattern})" if kind != pattern else "")
            for m in (profile.find(layers), profile.find(layers, num_layers - min(layers) - 1)):
                if m is not None:
                    lines.append(_row(m, full, num_layers, name + (f" rc {m.recompute}" if m.recompute else "")))
        constraint = constraints[i] if i < len(constraints) else None
        if constraint is not None and loads == profile.quantization:
            lines += plan_lines(constraint, num_layers)
    mem, tim = profile.memory, profile.time
    lines += ["", "cost model (depth = layers from the lowest trained one to the output):"]
    if mem is not None:
        lines.append(f"  peak memory = {mem.describe('MiB')}")
    if profile.total_memory is not None:
        lines.append(f"  total       = {profile.weights_mb:.3g} MiB of weights + peak memory")
    lines.append(f"  step time   = {tim.describe('s')}")
    return "\n".join(lines)


def plan_lines(constraint: LayerConstraint, num_layers: int) -> list[str]:
    """Which plans a tier's budget admits: per layer count, how deep it may reach kept and recomputing."""
    lines = [
        f"  budget -> at most {constraint.max_layers} layers; {constraint.max_layers} layers reach down to layer "
        f"{constraint.min_layer} (budget-true plans stay within budget; others may not)"
    ]
    if constraint.recompute is not None:
        lines.append("  plans that fit (layers: lowest layer reachable, and the blocks it then recomputes):")
        for count in range(1, constraint.max_layers + 1):
            reach = [(f, constraint.recompute_for(count, f)) for f in range(num_layers - count + 1)]
            fitting = [(f, r) for f, r in reach if r is not None]
            kept = min((f for f, r in fitting if r == 0), default=None)
            deepest, blocks = min(fitting) if fitting else (None, None)
            reach_kept = "-" if kept is None else kept
            text = f"    {count} layer{'s' if count > 1 else ' '}: kept down to layer {reach_kept}"
            if deepest is not None and blocks:
                text += f", recomputing {blocks} block{'s' if blocks > 1 else ''} down to layer {deepest}"
            lines.append(text)
    return lines


def format_budget_report(rows: list[dict[str, Any]]) -> str:
    """Budget vs measured per tier of a finished run."""
    lines = [
        f"  {'tier':<5}{'quant':>6}{'layers':>7}{'budget MiB':>11}{'peak med':>10}{'peak max':>10}{'over':>6}"
        f"{'budget tot':>11}{'total max':>10}{'over':>6}"
        f"{'budget s':>9}{'step med':>10}{'step max':>10}{'over':>6}{'plans':>7}{'lowest':>8}{'recomp':>8}"
    ]
    for r in rows:
        lines.append(
            f"  {r['tier']:<5}{r['quantization']:>6}{r['layers'] or '-':>7}{_fmt(r['memory_mb']):>11}"
            f"{_fmt(r['peak_mb_median']):>10}{_fmt(r['peak_mb_max']):>10}{r['memory_violations']:>6}"
            f"{_fmt(r['total_memory_mb']):>11}{_fmt(r['total_mb_max']):>10}{r['total_violations']:>6}"
            f"{_fmt(r['seconds_per_step'], 3):>9}"
            f"{_fmt(r['step_s_median'], 3):>10}{_fmt(r['step_s_max'], 3):>10}{r['time_violations']:>6}"
            f"{r['plans']:>7}{'-' if r['lowest_layer'] is None else r['lowest_layer']:>8}"
            f"{r.get('recomputing_plans', 0):>8}"
        )
    return "\n".join(lines)
