"""Fed-pilot's allocator (arXiv 2410.10200), as far as it could be recovered: per client and round a 0/1 knapsack
over LoRA layers under the client's memory budget, maximising the sum of layer values; a layer's value mixes a
global part (the server's RMS per-sample gradient norm of the layer on the proxy set, refreshed on the FIM
schedule) and a local part (the client's own gradient norms of the layers it last trained, reported with its
update). Interpretations are listed in docs/compare.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedhello.allocation import ALLOCATORS
from fedhello.allocation.constraints import KnapsackAllocator
from fedhello.methods.fed_pilot.options import FedPilotOptions
from fedhello.plan import GRAD_NORM, ClientUpdate


@ALLOCATORS.register("fedpilot")
class FedPilotAllocator(KnapsackAllocator):
    """Fed-pilot: knapsack over layers with gradient-norm values (see the module docstring)."""

    Options = FedPilotOptions
    needs_importance = True

    def __init__(self, config, num_layers, tier_budgets, lora_rank=8, constraints=()) -> None:  # noqa: ANN001
        super().__init__(config, num_layers, tier_budgets, lora_rank, constraints)
        self.global_values: np.ndarray | None = None
        self.local_values: dict[int, dict[int, float]] = {}

    def wants_importance(self, round_num: int) -> bool:
        return self.config.is_refresh_round(round_num)

    def score_layers(self, fisher: dict[str, torch.Tensor], layout: dict[str, int]) -> np.ndarray:
        """RMS per-sample gradient norm of each layer: sqrt of the trace of its empirical Fisher."""
        traces = np.zeros(self.num_layers)
        for name, diagonal in fisher.items():
            if layout[name] >= 0:
                traces[layout[name]] += float(diagonal.sum())
        return np.sqrt(traces)

    def set_importance(self, round_num: int, scores: np.ndarray) -> dict[str, Any]:
        self.global_values = _normalised(scores)
        return {"scores": scores.tolist(), "values": self.global_values.tolist()}

    def observe(self, round_num: int, updates: Sequence[ClientUpdate]) -> None:
        """Keep each client's latest gradient norms (moving average over its rounds) as its local part."""
        decay = self.config.value_decay
        for update in updates:
            seen = self.local_values.setdefault(update.client_id, {})
            for key, value in update.metrics.items():
                if key.startswith(GRAD_NORM):
                    layer = int(key[len(GRAD_NORM) :])
                    seen[layer] = value if layer not in seen else decay * seen[layer] + (1 - decay) * value

    def values(self, client_id: int) -> np.ndarray:
        base = self.global_values if self.global_values is not None else np.ones(self.num_layers)
        local = self.local_values.get(client_id, {})
        if not local:
            return base
        mixed = base.copy()
        known = sorted(local)
        scaled = _normalised(np.array([local[i] for i in known]))
        weight = self.config.value_local_weight
        for layer, value in zip(known, scaled, strict=True):
            mixed[layer] = (1 - weight) * base[layer] + weight * value
        return mixed

    def state_dict(self) -> dict[str, Any]:
        return {
            "global_values": None if self.global_values is None else self.global_values.tolist(),
            "local_values": {str(c): {str(k): v for k, v in d.items()} for c, d in self.local_values.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        values = state.get("global_values")
        self.global_values = None if values is None else np.asarray(values, dtype=np.float64)
        self.local_values = {
            int(c): {int(k): float(v) for k, v in d.items()} for c, d in (state.get("local_values") or {}).items()
        }


def _normalised(values: np.ndarray) -> np.ndarray:
    """Values divided by their mean (all ones when they are all zero), so parts of different scales mix."""
    values = np.asarray(values, dtype=np.float64)
    mean = float(values.mean()) if values.size else 0.0
    return values / mean if mean > 0 else np.ones_like(values)
