"""The cost model: what training a layer set costs, and which layer sets fit a budget.

With real freezing, autograd keeps activations and runs backward only from the output down to the
*lowest* trained layer; below it there is nothing to differentiate. So a layer set's cost is, to a good
approximation, linear in its *depth* (number of blocks from the lowest trained one to the output, 0 when
no block is trained) plus a small term per trained layer (its LoRA gradients and AdamW state):

    cost(S) = base + per_depth * (L - min(S)) + per_layer * |S|

`CostModel.fit` estimates the three coefficients from measurements (least squares, non-negative slopes).
`LayerConstraint` is what a budget becomes: at most `max_layers` layers, none below `min_layer`.

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
    """cost = base + per_depth * depth + per_layer * count, plus `margin`, the largest amount by which a
    measurement exceeded the fit (so `upper` never under-predicts a measured set)."""

    base: float
    per_depth: float
    per_layer: float
    margin: float = 0.0

    def predict_counts(self, count: int, lowest: int, num_layers: int) -> float:
        """Predicted cost of `count` layers whose lowest is `lowest` (count 0 = head only)."""
        d = num_layers - lowest if count else 0
        return self.base + self.per_depth * d + self.per_layer * count

    def predict(self, layers: Sequence[int], num_layers: int) -> float:
        return self.base + self.per_depth * depth(layers, num_layers) + self.per_layer * len(layers)

    def upper(self, count: int, lowest: int, num_layers: int) -> float:
        """Conservative prediction used to turn budgets into constraints."""
        return self.predict_counts(count, lowest, num_layers) + self.margin

    @classmethod
    def fit(cls, samples: Sequence[tuple[Sequence[int], float]], num_layers: int) -> CostModel:
        """Least-squares fit on (layer set, measured cost) pairs; a slope that comes out negative (noise)
        is dropped and the rest refitted, so more depth or more layers never predicts less cost."""
        if not samples:
            raise ValueError("no measurements to fit")
        x = np.array([[1.0, depth(s, num_layers), len(s)] for s, _ in samples])
        y = np.array([float(c) for _, c in samples])
        active = [0, 1, 2]
        coef = np.zeros(3)
        while True:
            sol, *_ = np.linalg.lstsq(x[:, active], y, rcond=None)
            coef[:] = 0.0
            coef[active] = sol
            negative = [i for i in active[1:] if coef[i] < 0]
            if not negative:
                break
            active.remove(min(negative, key=lambda i: coef[i]))
        residual = y - x @ coef
        return cls(float(coef[0]), float(coef[1]), float(coef[2]), float(max(residual.max(), 0.0)))

    def plus(self, constant: float) -> CostModel:
        """This model with `constant` added to every prediction (e.g. the base weights' memory)."""
        return CostModel(self.base + constant, self.per_depth, self.per_layer, self.margin)

    def describe(self, unit: str) -> str:
        return (
            f"{self.base:.3g} + {self.per_depth:.3g}*depth + {self.per_layer:.3g}*layers {unit}"
            f" (max excess over fit {self.margin:.3g})"
        )

    def to_json(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class LayerConstraint:
    """At most `max_layers` layers, none below `min_layer` (0 = no depth limit).

    `floors[n - 1]`, when given, is the lowest layer a set of n layers may reach within the budget (fewer
    layers can reach a little deeper); `min_layer` is the floor of `max_layers` layers. `allows` and
    `repair` use the conservative `min_layer`; `fits` (used by knapsack allocators) the exact floors."""

    max_layers: int
    min_layer: int = 0
    floors: tuple[int, ...] | None = None

    def floor_for(self, count: int) -> int:
        """The lowest layer a set of `count` layers may reach."""
        if self.floors is None or not 1 <= count <= len(self.floors):
            return self.min_layer
        return self.floors[count - 1]

    def fits(self, count: int, lowest: int) -> bool:
        """Whether `count` layers whose lowest is `lowest` fit the budget."""
        return count <= self.max_layers and lowest >= self.floor_for(count)

    def allows(self, layers: Sequence[int]) -> bool:
        return len(layers) <= self.max_layers and all(i >= self.min_layer for i in layers)

    def repair(self, layers: Sequence[int], num_layers: int) -> tuple[int, ...]:
        """Move layers below `min_layer` to the shallowest allowed layers not already chosen, keeping
        the count (when the allowed range is large enough) and the layers that already comply."""
        kept = sorted(i for i in set(layers) if i >= self.min_layer)
        missing = min(len(set(layers)), self.max_layers) - len(kept)
        spare = [i for i in range(self.min_layer, num_layers) if i not in kept]
        return tuple(sorted(kept[: self.max_layers] + spare[: max(missing, 0)]))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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
) -> LayerConstraint:
    """Turn a tier's budget into a constraint.

    The cheapest k layers are the top k (lowest layer L-k), so the largest feasible k is the largest
    whose top-k set fits (or the declared `layers`). Then `min_layer` is the shallowest lowest layer with
    which k layers still fit: any set of k layers at or above it fits the budget by construction.
    `total` is the memory model including the base weights (`CostModel.plus`), for a `total_memory_mb` budget.
    """
    budgets = ((memory, memory_mb, "MiB"), (time, seconds_per_step, "s"), (total, total_memory_mb, "MiB in total"))
    limits = [(m, b, unit) for m, b, unit in budgets if b]
    for model, _, unit in limits:
        if model is None:
            raise BudgetError(f"no cost model in {unit} to apply the budget")

    def fits(count: int, lowest: int) -> bool:
        return all(model.upper(count, lowest, num_layers) <= budget for model, budget, _ in limits)

    if layers is None:
        counts = [k for k in range(num_layers, 0, -1) if fits(k, num_layers - k)]
        if not counts:
            need = ", ".join(f"{m.upper(1, num_layers - 1, num_layers):.3g} {u}" for m, _, u in limits)
            raise BudgetError(f"too small to train even the top layer (needs about {need})")
        layers = counts[0]
    elif not fits(layers, num_layers - layers):
        need = ", ".join(f"{m.upper(layers, num_layers - layers, num_layers):.3g} {u}" for m, _, u in limits)
        raise BudgetError(f"too small for {layers} layers even at the top (needs about {need})")
    floor = min(f for f in range(num_layers - layers + 1) if fits(layers, f))
    floors = tuple(min(f for f in range(num_layers - n + 1) if fits(n, f)) for n in range(1, layers + 1))
    return LayerConstraint(max_layers=layers, min_layer=floor, floors=floors)


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
