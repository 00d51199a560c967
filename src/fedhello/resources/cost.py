"""The cost model: what training a layer set costs, and which layer sets fit a budget.

With real freezing, autograd keeps activations and runs backward only from the output down to the
*lowest* trained layer; below it there is nothing to differentiate. So a layer set's cost is, to a good
approximation, linear in its *depth* (number of blocks from the lowest trained one to the output, 0 when
no block is trained) plus a small term per trained layer (its LoRA gradients and AdamW state):

    cost(S) = base + per_depth * (L - min(S)) + per_layer * |S|

Recomputing activations (`Plan.recompute`: r blocks from the lowest trained layer up keep only their input and
run their forward again in backward) moves r blocks from the depth term to a recompute term of their own:

    cost(S, r) = base + per_depth * (L - min(S) - r) + per_layer * |S| + per_recompute * r

For memory per_recompute is small (a block's input), for time it is a block's backward plus one more forward.
`CostModel.fit` estimates the coefficients from measurements (least squares, non-negative slopes).
`LayerConstraint` is what a budget becomes: how many layers, and for each (count, lowest layer) whether it fits
and with how many recomputed blocks.

Quantization adds a term. A client's whole memory is its base weights at its quantization q plus training:

    total(S, q) = weights(q) + cost_q(S)

`weights(q)` is measured on the loaded model (`fedhello.models.quantize.weights_mb`), `cost_q` is fitted on a
profile of the model loaded in q (dequantizing in backward changes the training term too). A `total_memory_mb`
budget may therefore be met by quantizing, by training fewer or higher layers, or both: `most_depth` picks,
among the quantizations a tier allows, the one whose constraint trains the most depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


def depth(layers: Sequence[int], num_layers: int) -> int:
    """Blocks from the lowest trained layer to the output (what backward has to traverse)."""
    return num_layers - min(layers) if len(layers) else 0


@dataclass
class CostModel:
    """cost = base + per_depth * (depth - r) + per_layer * count + per_recompute * r, where r is the number of
    blocks that recompute their activations (`Plan.recompute`, at most depth - 1), plus `margin`, the largest
    amount by which a measurement exceeded the fit (so `upper` never under-predicts a measured set).

    For memory a recomputed block costs far less than a kept one (its input instead of its activations); for time
    it costs more (its backward plus one more forward)."""

    base: float
    per_depth: float
    per_layer: float
    margin: float = 0.0
    per_recompute: float = 0.0

    def predict_counts(self, count: int, lowest: int, num_layers: int, recompute: int = 0) -> float:
        """Predicted cost of `count` layers whose lowest is `lowest` (count 0 = head only), recomputing the
        activations of `recompute` blocks."""
        d = num_layers - lowest if count else 0
        r = min(max(recompute, 0), d)
        return self.base + self.per_depth * (d - r) + self.per_layer * count + self.per_recompute * r

    def predict(self, layers: Sequence[int], num_layers: int, recompute: int = 0) -> float:
        lowest = min(layers) if len(layers) else num_layers
        return self.predict_counts(len(layers), lowest, num_layers, recompute)

    def upper(self, count: int, lowest: int, num_layers: int, recompute: int = 0) -> float:
        """Conservative prediction used to turn budgets into constraints."""
        return self.predict_counts(count, lowest, num_layers, recompute) + self.margin

    @classmethod
    def fit(
        cls, samples: Sequence[tuple[Sequence[int], float] | tuple[Sequence[int], float, int]], num_layers: int
    ) -> CostModel:
        """Least-squares fit on (layer set, measured cost[, recomputed blocks]) samples; a slope that comes out
        negative (noise) is dropped and the rest refitted, so more depth, layers or recomputation never predicts
        less cost. Without recomputed samples the recompute slope stays 0 (nothing to learn it from: callers must
        not plan recomputation then, see `Profile.measured_recompute`)."""
        if not samples:
            raise ValueError("no measurements to fit")
        rows, y = [], []
        for sample in samples:
            layers, cost = sample[0], sample[1]
            d = depth(layers, num_layers)
            r = min(int(sample[2]) if len(sample) > 2 else 0, d)
            rows.append([1.0, d - r, len(layers), r])
            y.append(float(cost))
        x, target = np.array(rows, dtype=float), np.array(y)
        active = [0, 1, 2, 3] if x[:, 3].any() else [0, 1, 2]
        coef = np.zeros(4)
        while True:
            sol, *_ = np.linalg.lstsq(x[:, active], target, rcond=None)
            coef[:] = 0.0
            coef[active] = sol
            negative = [i for i in active[1:] if coef[i] < 0]
            if not negative:
                break
            active.remove(min(negative, key=lambda i: coef[i]))
        residual = target - x @ coef
        return cls(float(coef[0]), float(coef[1]), float(coef[2]), float(max(residual.max(), 0.0)), float(coef[3]))

    def plus(self, constant: float) -> CostModel:
        """This model with `constant` added to every prediction (e.g. the base weights' memory)."""
        return CostModel(self.base + constant, self.per_depth, self.per_layer, self.margin, self.per_recompute)

    def scaled(self, factor: float) -> CostModel:
        """This model with every prediction multiplied by `factor` (e.g. micro-batches per optimizer step)."""
        return CostModel(
            self.base * factor,
            self.per_depth * factor,
            self.per_layer * factor,
            self.margin * factor,
            self.per_recompute * factor,
        )

    def describe(self, unit: str) -> str:
        text = f"{self.base:.3g} + {self.per_depth:.3g}*depth kept + {self.per_layer:.3g}*layers"
        if self.per_recompute:
            text += f" + {self.per_recompute:.3g}*blocks recomputed"
        return f"{text} {unit} (max excess over fit {self.margin:.3g})"

    def to_json(self) -> dict[str, float]:
        return asdict(self)


NO_FIT = -1  # in `LayerConstraint.recompute`: this (count, lowest layer) does not fit however much is recomputed


@dataclass(frozen=True)
class LayerConstraint:
    """What a budget allows: at most `max_layers` layers, and for each (count, lowest layer) whether it fits and
    how many blocks must then recompute their activations.

    `recompute[n - 1][f]` is the fewest blocks a set of n layers whose lowest is f must recompute to fit (0: it fits
    with activations kept; `NO_FIT`: it does not fit). Without the table (None) a set fits when its lowest layer is
    at or above `floors[n - 1]` (or `min_layer`), with activations kept. `floors[n - 1]` is the lowest layer n layers
    may reach; `min_layer` the floor of `max_layers` layers."""

    max_layers: int
    min_layer: int = 0
    floors: tuple[int, ...] | None = None
    recompute: tuple[tuple[int, ...], ...] | None = None

    def floor_for(self, count: int) -> int:
        """The lowest layer a set of `count` layers may reach."""
        if self.floors is None or not 1 <= count <= len(self.floors):
            return self.min_layer
        return self.floors[count - 1]

    def recompute_for(self, count: int, lowest: int) -> int | None:
        """Blocks to recompute so that `count` layers whose lowest is `lowest` fit (0: none); None if they never
        fit. A head-only plan (count 0) always fits as it is."""
        if count <= 0:
            return 0
        if count > self.max_layers:
            return None
        if self.recompute is None:
            return 0 if lowest >= self.floor_for(count) else None
        row = self.recompute[count - 1] if count <= len(self.recompute) else ()
        value = row[lowest] if 0 <= lowest < len(row) else NO_FIT
        return None if value == NO_FIT else value

    def fits(self, count: int, lowest: int) -> bool:
        """Whether `count` layers whose lowest is `lowest` fit the budget (recomputing where the table says)."""
        return self.recompute_for(count, lowest) is not None

    def allows(self, layers: Sequence[int]) -> bool:
        """Whether this exact layer set fits (by its count and lowest layer)."""
        chosen = set(layers)
        return not chosen or self.fits(len(chosen), min(chosen))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# Headroom between a prediction and a budget, as a share of the prediction. `CostModel.margin` covers how far the
# profile's own measurements lie above the fit; a run measures the same plan again, on other rows, in another
# process, and scatters around it (seen: +-0.3 MiB of 13 MiB for one plan measured in one run; CPU time per step
# +-5-10 % on a shared machine). Budgets that hold need both.
SLACK = {"MiB": 0.03, "s": 0.10, "MiB in total": 0.03}


class BudgetError(ValueError):
    """A budget no layer set can meet (the message says the smallest feasible budget)."""


def budget_constraint(
    num_layers: int,
    memory: CostModel | None,
    time: CostModel | None,
    memory_mb: float | None = None,
    seconds_per_step: float | None = None,
    layers: int | None = None,
    total: CostModel | None = None,
    total_memory_mb: float | None = None,
    recompute: bool = False,
) -> LayerConstraint:
    """Turn a tier's budgets into a constraint: for every count n and lowest layer f, the fewest recomputed blocks
    with which n layers reaching f meet every budget (only 0 unless `recompute`).

    The cheapest n layers are the top n, so the largest feasible count is the largest whose top set fits (or the
    declared `layers`, which must fit at the top). Costs are monotone in count, depth and (for memory) inversely in
    recomputation, so the first r that meets every budget is the answer for (n, f): a larger r only costs more
    time. A prediction fits when it stays `SLACK` below the budget. `total` is the memory model including the
    base weights (`CostModel.plus`), for `total_memory_mb`.
    """
    budgets = ((memory, memory_mb, "MiB"), (time, seconds_per_step, "s"), (total, total_memory_mb, "MiB in total"))
    limits = [(m, b, unit) for m, b, unit in budgets if b]
    for model, _, unit in limits:
        if model is None:
            raise BudgetError(f"no cost model in {unit} to apply the budget")

    def least_recompute(count: int, lowest: int) -> int:
        d = num_layers - lowest
        for r in range(0, max(d - 1, 0) + 1) if recompute else (0,):
            if all(
                model.upper(count, lowest, num_layers, r) * (1 + SLACK[unit]) <= budget
                for model, budget, unit in limits
            ):
                return r
        return NO_FIT

    table = tuple(
        tuple(least_recompute(n, f) if f <= num_layers - n else NO_FIT for f in range(num_layers))
        for n in range(1, num_layers + 1)
    )

    def need(count: int) -> str:
        r = count - 1 if recompute else 0  # the most a top set can recompute
        return ", ".join(
            f"{m.upper(count, num_layers - count, num_layers, r) * (1 + SLACK[u]):.3g} {u}" for m, _, u in limits
        )

    if layers is None:
        counts = [n for n in range(num_layers, 0, -1) if table[n - 1][num_layers - n] != NO_FIT]
        if not counts:
            raise BudgetError(f"too small to train even the top layer (needs about {need(1)})")
        layers = counts[0]
    elif table[layers - 1][num_layers - layers] == NO_FIT:
        raise BudgetError(f"too small for {layers} layers even at the top (needs about {need(layers)})")
    floors = tuple(min(f for f in range(num_layers - n + 1) if table[n - 1][f] != NO_FIT) for n in range(1, layers + 1))
    return LayerConstraint(
        max_layers=layers, min_layer=floors[-1], floors=floors, recompute=table if recompute else None
    )


def reachable_depth(constraint: LayerConstraint, num_layers: int) -> int:
    """The most blocks a plan within `constraint` can train through (fewer layers may reach deeper)."""
    floors = constraint.floors or (constraint.min_layer,)
    return num_layers - min(floors)


def most_depth(options: dict[str, LayerConstraint], num_layers: int) -> str:
    """The option (e.g. a quantization) whose constraint trains the most depth, then the most layers; ties go to
    the first option given (list the more precise quantizations first)."""
    if not options:
        raise ValueError("no option to choose from")
    order = list(options)
    return max(
        order,
        key=lambda o: (reachable_depth(options[o], num_layers), options[o].max_layers, -order.index(o)),
    )
