"""Clipping a client's whole change (all the tensors it uploads together) to an L2 norm."""

from __future__ import annotations

import torch


def change_norm(change: dict[str, torch.Tensor]) -> float:
    """The L2 norm of all the tensors together."""
    return float(torch.sqrt(sum((t.to(torch.float64) ** 2).sum() for t in change.values())))


def clip_change(change: dict[str, torch.Tensor], clip_norm: float) -> tuple[dict[str, torch.Tensor], float]:
    """The change scaled to L2 norm at most `clip_norm` (float64), and its norm before clipping."""
    norm = change_norm(change) if change else 0.0
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return {name: t.to(torch.float64) * scale for name, t in change.items()}, norm
