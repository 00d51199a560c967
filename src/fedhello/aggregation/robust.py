"""Byzantine-robust aggregation of masked updates: each tensor (or, for Krum, each layer) is merged over exactly the
clients that uploaded it, so a client is only ever judged against the others that trained the same layer.

  median        coordinate-wise median of the contributors' values (Yin et al. 2018)
  trimmed_mean  per coordinate, drop the floor(beta * m) largest and smallest of the m contributors' values and
                average the rest (beta = `aggregation.trim_fraction`; Yin et al. 2018)
  multi_krum    per layer group (a block's LoRA tensors; the task head is a group of its own): score every
                contributor by the sum of squared distances from its change to its m - f - 2 nearest neighbours'
                (f = `aggregation.byzantine`), keep the m - f lowest scores and average their uploads (Blanchard et
                al. 2017). Krum needs m > 2f + 2; a group with fewer contributors gets the coordinate-wise median.

Robust rules count every client once: a sample count is a claim a hostile client can inflate, so the config
refuses `aggregation.weighting: samples` with them (`Aggregator.weighs_samples`). Like masked FedAvg they need
every upload at the global shape (not rank-truncated). What a rule could not do in a round (a layer too small to
trim, or for Krum) is said in the round's `warnings` (`Aggregator.notes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from fedhello.aggregation.base import AGGREGATORS, Aggregator
from fedhello.models.layers import layer_index
from fedhello.plan import ClientUpdate, Upload

if TYPE_CHECKING:
    from fedhello.config import AggregationConfig

Group = int | str  # a block index, or "head" for the tensors outside the blocks


def group_of(name: str) -> Group:
    """The layer group of a tensor: its block index, or "head" (the task head is a group of its own)."""
    index = layer_index(name)
    return "head" if index is None else index


def contributions(name: str, current: torch.Tensor, updates: Sequence[ClientUpdate]) -> list[torch.Tensor]:
    """The float64 values of tensor `name` from the updates that uploaded it; a rank-truncated upload is an error."""
    out = []
    for u in updates:
        if name not in u.tensors:
            continue
        tensor = u.tensors[name]
        if tuple(tensor.shape) != tuple(current.shape):
            raise ValueError(
                f"robust aggregation: client {u.client_id} sent {name} with shape {list(tensor.shape)}, the global "
                f"tensor is {list(current.shape)}; rank-truncated uploads need a rank-aware aggregator"
            )
        out.append(tensor.detach().to(torch.float64))
    return out


def coordinate_median(values: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per coordinate, the median of `values` (the mean of the two middle ones for an even count)."""
    ordered = torch.stack(list(values)).sort(dim=0).values
    m = len(values)
    return ordered[m // 2] if m % 2 else (ordered[m // 2 - 1] + ordered[m // 2]) / 2


def trimmed_mean(values: Sequence[torch.Tensor], trim: int) -> torch.Tensor:
    """Per coordinate, the mean of `values` without the `trim` largest and `trim` smallest (needs 2 trim < m)."""
    ordered = torch.stack(list(values)).sort(dim=0).values
    return ordered[trim : len(values) - trim].mean(dim=0)


def _ordered(groups: Sequence[Group]) -> list[Group]:
    """Layer groups, blocks in order and the head last."""
    blocks: list[Group] = sorted(g for g in set(groups) if isinstance(g, int))
    return blocks + (["head"] if "head" in groups else [])


def _layers(groups: Sequence[Group]) -> str:
    """Layer groups for a note."""
    return ", ".join(str(g) for g in _ordered(groups))


class _PerTensor(Aggregator):
    """A coordinate-wise rule applied to every tensor over the clients that uploaded it; tensors nobody uploaded keep
    their value. Subclasses give `merge(values) -> tensor` and may note what it could not do."""

    accepts = frozenset({Upload.FULL, Upload.ONE_FACTOR})
    weighs_samples = False

    def __init__(self, weighting="uniform") -> None:  # noqa: ANN001
        super().__init__(weighting)
        self._notes: list[str] = []

    def merge(self, values: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def note(self, counts: dict[Group, int]) -> str | None:
        """A sentence for the round's warnings, from each layer group's contributor count, or None."""
        return None

    def aggregate(self, global_state, updates):  # noqa: ANN001
        new_state: dict[str, torch.Tensor] = {}
        counts: dict[Group, int] = {}
        for name, current in global_state.items():
            values = contributions(name, current, updates)
            if not values:
                new_state[name] = current.clone()
                continue
            group = group_of(name)
            counts[group] = max(counts.get(group, 0), len(values))
            new_state[name] = self.merge(values).to(current.dtype)
        note = self.note(counts)
        self._notes = [note] if note else []
        return new_state

    def notes(self) -> list[str]:
        return list(self._notes)


@AGGREGATORS.register("median")
class CoordinateMedian(_PerTensor):
    """Coordinate-wise median over each tensor's contributors."""

    def merge(self, values):  # noqa: ANN001
        return coordinate_median(values)

    def note(self, counts):  # noqa: ANN001
        few = [g for g, m in counts.items() if m <= 2]
        return f"median: layers {_layers(few)} had at most 2 contributors, whose median is their mean" if few else None


@AGGREGATORS.register("trimmed_mean")
class TrimmedMean(_PerTensor):
    """Coordinate-wise trimmed mean over each tensor's contributors (`aggregation.trim_fraction`)."""

    def __init__(self, weighting="uniform", trim_fraction: float = 0.2) -> None:  # noqa: ANN001
        super().__init__(weighting)
        if not 0.0 <= trim_fraction < 0.5:
            raise ValueError(f"trim_fraction {trim_fraction} is not in [0, 0.5)")
        self.trim_fraction = trim_fraction

    @classmethod
    def from_config(cls, settings: AggregationConfig) -> TrimmedMean:
        return cls(settings.weighting, settings.trim_fraction)

    def trim(self, m: int) -> int:
        """How many values of m are dropped at each end: floor(beta * m)."""
        return math.floor(self.trim_fraction * m)

    def merge(self, values):  # noqa: ANN001
        return trimmed_mean(values, self.trim(len(values)))

    def note(self, counts):  # noqa: ANN001
        untrimmed = [g for g, m in counts.items() if self.trim(m) == 0]
        if not untrimmed or self.trim_fraction == 0:
            return None
        needed = math.ceil(1 / self.trim_fraction - 1e-9)
        return (
            f"trimmed_mean: nothing trimmed on layers {_layers(untrimmed)}: fewer than {needed} contributors "
            f"(aggregation.trim_fraction {self.trim_fraction:g}), a plain mean there"
        )


def _change_vector(update: ClientUpdate, names: list[str], global_state: dict[str, torch.Tensor]) -> torch.Tensor:
    """The update's change of a layer group as one float64 vector; a tensor of the group it did not upload counts
    as unchanged (zeros)."""
    parts = []
    for name in names:
        base = global_state[name].to(torch.float64)
        tensor = update.tensors.get(name)
        parts.append(tensor.detach().to(torch.float64) - base if tensor is not None else torch.zeros_like(base))
    return torch.cat([p.flatten() for p in parts])


def krum_selection(vectors: Sequence[torch.Tensor], byzantine: int) -> list[int]:
    """Multi-Krum: the positions of the m - f vectors with the lowest Krum scores (sum of squared distances to the
    m - f - 2 nearest others), in their original order. Needs m > 2f + 2. Ties go to the earlier position."""
    m = len(vectors)
    if m <= 2 * byzantine + 2:
        raise ValueError(f"Krum with f={byzantine} needs more than {2 * byzantine + 2} vectors, got {m}")
    distances = torch.zeros(m, m, dtype=torch.float64)
    for i in range(m):
        for j in range(i + 1, m):
            distances[i, j] = distances[j, i] = (vectors[i] - vectors[j]).pow(2).sum()
    neighbours = m - byzantine - 2
    scores = []
    for i in range(m):
        others = torch.cat([distances[i, :i], distances[i, i + 1 :]])
        scores.append(float(others.sort().values[:neighbours].sum()))
    ranked = sorted(range(m), key=lambda i: (scores[i], i))
    return sorted(ranked[: m - byzantine])


@AGGREGATORS.register("multi_krum")
class MultiKrum(Aggregator):
    """Multi-Krum per layer group over the clients that trained it (`aggregation.byzantine` = f), the
    coordinate-wise median where a group has too few contributors for Krum."""

    accepts = frozenset({Upload.FULL, Upload.ONE_FACTOR})
    weighs_samples = False

    def __init__(self, weighting="uniform", byzantine: int = 1) -> None:  # noqa: ANN001
        super().__init__(weighting)
        if byzantine < 0:
            raise ValueError(f"byzantine {byzantine} is negative")
        self.byzantine = byzantine
        self._notes: list[str] = []

    @classmethod
    def from_config(cls, settings: AggregationConfig) -> MultiKrum:
        return cls(settings.weighting, settings.byzantine)

    def aggregate(self, global_state, updates):  # noqa: ANN001
        new_state = {name: current.clone() for name, current in global_state.items()}
        groups: dict[Group, list[str]] = {}
        for name in global_state:
            if any(name in u.tensors for u in updates):
                groups.setdefault(group_of(name), []).append(name)
        fallback: dict[Group, int] = {}
        for group, names in groups.items():
            members = [u for u in updates if any(n in u.tensors for n in names)]
            if len(members) <= 2 * self.byzantine + 2:
                fallback[group] = len(members)
                for name in names:
                    values = contributions(name, global_state[name], members)
                    new_state[name] = coordinate_median(values).to(global_state[name].dtype)
                continue
            for name in names:  # the shape check before any distance
                contributions(name, global_state[name], members)
            vectors = [_change_vector(u, names, global_state) for u in members]
            kept = [members[i] for i in krum_selection(vectors, self.byzantine)]
            for name in names:
                values = contributions(name, global_state[name], kept)
                if values:
                    merged = torch.stack(values).mean(dim=0)
                else:  # none of the kept clients sent this tensor of the group: the median of those that did
                    merged = coordinate_median(contributions(name, global_state[name], members))
                new_state[name] = merged.to(global_state[name].dtype)
        self._notes = []
        if fallback:
            counts = ", ".join(f"{g}: {fallback[g]}" for g in _ordered(list(fallback)))
            self._notes.append(
                f"multi_krum: coordinate-wise median on layers {_layers(list(fallback))} (contributors {counts}); "
                f"Krum with aggregation.byzantine={self.byzantine} needs more than {2 * self.byzantine + 2}"
            )
        return new_state

    def notes(self) -> list[str]:
        return list(self._notes)
