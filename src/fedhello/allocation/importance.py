"""Layer importance from the diagonal empirical Fisher information of the LoRA parameters.

FIM diagonal = mean over proxy samples of the squared per-sample gradient. A layer's score is the sum over
its LoRA tensors of the Frobenius norm of that diagonal. Scores are grouped into importance levels by an
exact 1-D k-means (contiguous groups in sorted order, minimal within-group squared error) and level j
(0 = least important) gets probability proportional to j + 1 -- the official 1:2:3 weights, but with levels
ordered by score, where the official KMeans cluster ids were arbitrary.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from datasets import Dataset
from pydantic import Field

from fedhello.config import StrategyConfig
from fedhello.models.layers import HEAD


def empirical_fisher(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    samples: Dataset,
    collate: Callable[[list], dict[str, torch.Tensor]],
    names: list[str],
) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of the named parameters: mean over all samples of grad**2, with one
    backward pass per sample (exact per-sample gradients). The model is left in eval mode, its
    parameters' `requires_grad` as they were."""
    params = dict(model.named_parameters())
    previous = {n: p.requires_grad for n, p in params.items()}
    for n, p in params.items():
        p.requires_grad_(n in names)
    device = next(model.parameters()).device
    fisher = {n: torch.zeros_like(params[n], dtype=torch.float32) for n in names}
    model.eval()
    try:
        for i in range(len(samples)):
            batch = {k: v.to(device) for k, v in collate([samples[i]]).items()}
            model.zero_grad(set_to_none=True)
            loss_fn(model, batch).backward()
            for n in names:
                grad = params[n].grad
                if grad is not None:
                    fisher[n] += grad.detach().float() ** 2
    finally:
        model.zero_grad(set_to_none=True)
        for n, p in params.items():
            p.requires_grad_(previous[n])
    count = max(len(samples), 1)
    return {n: f / count for n, f in fisher.items()}


def layer_scores(fisher: dict[str, torch.Tensor], layout: dict[str, int], num_layers: int) -> np.ndarray:
    """Per-layer score: sum over the layer's LoRA tensors of the Frobenius norm of their FIM diagonal."""
    scores = np.zeros(num_layers, dtype=np.float64)
    for name, values in fisher.items():
        layer = layout[name]
        if layer != HEAD:
            scores[layer] += float(torch.linalg.vector_norm(values))
    return scores


def importance_levels(scores: np.ndarray, num_levels: int) -> np.ndarray:
    """Level of each layer (0 = least important) from an exact 1-D k-means by dynamic programming.

    Groups are cut only between distinct scores, so equal scores always share a level: layers that tie
    (an all-zero Fisher, say) must not be told apart by their index. With fewer distinct scores than
    `num_levels` there are only that many levels (all ties: every layer at level 0, uniform sampling).
    """
    values, inverse, counts = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True, return_counts=True)
    n, k = len(values), min(num_levels, len(values))
    weights = counts.astype(np.float64)
    prefix_w = np.concatenate([[0.0], np.cumsum(weights)])
    prefix = np.concatenate([[0.0], np.cumsum(weights * values)])
    prefix_sq = np.concatenate([[0.0], np.cumsum(weights * values**2)])

    def sse(i: int, j: int) -> float:  # squared error of the layers scoring values[i:j] around their mean
        total, count = prefix[j] - prefix[i], prefix_w[j] - prefix_w[i]
        return prefix_sq[j] - prefix_sq[i] - total * total / count

    cost = np.full((k + 1, n + 1), np.inf)
    cut = np.zeros((k + 1, n + 1), dtype=np.int64)
    cost[0, 0] = 0.0
    for g in range(1, k + 1):
        for j in range(g, n + 1):
            for i in range(g - 1, j):
                candidate = cost[g - 1, i] + sse(i, j)
                if candidate < cost[g, j] - 1e-15:
                    cost[g, j], cut[g, j] = candidate, i
    level_of_value = np.zeros(n, dtype=np.int64)
    j = n
    for g in range(k, 0, -1):
        i = cut[g, j]
        level_of_value[i:j] = g - 1
        j = i
    return level_of_value[inverse.reshape(-1)]


def level_probabilities(scores: np.ndarray, num_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Layer sampling probabilities proportional to level + 1, and the levels."""
    levels = importance_levels(np.asarray(scores, dtype=np.float64), num_levels)
    weights = (levels + 1).astype(np.float64)
    return weights / weights.sum(), levels


class ImportanceSchedule(StrategyConfig):
    """Options of a strategy whose server re-estimates layer importance on the proxy set (FIM-HLA, Fed-HeLLo,
    Fed-pilot share this schedule)."""

    fim_warmup: int = Field(5, ge=0, description="rounds before the first importance (FIM) estimate")
    fim_every: int = Field(5, gt=0, description="rounds between importance (FIM) refreshes")

    def is_refresh_round(self, round_num: int) -> bool:
        """Whether the server re-estimates layer importance before round `round_num`: the first time after
        `fim_warmup` rounds, then every `fim_every` rounds."""
        start = self.fim_warmup + 1
        return round_num >= start and (round_num - start) % self.fim_every == 0
