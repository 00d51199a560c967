"""Fed-pilot's aggregation (arXiv 2410.10200), as far as it could be recovered.

The paper weights client updates adaptively and compensates layers that few clients updated, "spatially"
(across the clients of a round) and "temporally" (across rounds); its formula was not available. fedhello's
interpretation (docs/compare.md):

- spatial: each tensor is the sample-weighted mean over the clients that trained it (masked FedAvg);
- temporal: the server keeps a moving average c_t of how many clients updated each tensor per round. A
  tensor updated by fewer clients than the most-updated one moves further toward its mean:
  W <- W + s (mean - W), with s = min(max_scale, sqrt(max_t c / c_t)). Under memory budgets the bottom layers
  are trained by the strong tier only, so they are the ones compensated.

Stateful (the moving counts), so the checkpoint carries `state_dict()`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fedhello.aggregation.base import AGGREGATORS, Aggregator
from fedhello.aggregation.fedavg import masked_fedavg
from fedhello.plan import Upload

DECAY = 0.8  # weight of the past in the moving update counts
MAX_SCALE = 1.5  # largest step multiplier of an under-updated tensor


@AGGREGATORS.register("fedpilot")
class FedPilotAggregator(Aggregator):
    """Masked FedAvg plus a per-tensor step multiplier that compensates rarely updated tensors."""

    accepts = frozenset({Upload.FULL, Upload.ONE_FACTOR})  # per tensor, like masked FedAvg

    def __init__(self, weighting="samples") -> None:  # noqa: ANN001
        super().__init__(weighting)
        self.counts: dict[str, float] = {}

    def aggregate(self, global_state, updates):  # noqa: ANN001
        mean = masked_fedavg(global_state, updates, self.weighting)
        for name in global_state:
            count = float(sum(1 for u in updates if name in u.tensors))
            previous = self.counts.get(name)
            self.counts[name] = count if previous is None else DECAY * previous + (1 - DECAY) * count
        most = max(self.counts.values(), default=0.0)
        out: dict[str, torch.Tensor] = {}
        for name, current in global_state.items():
            if not any(name in u.tensors for u in updates):
                out[name] = mean[name]
                continue
            scale = min(MAX_SCALE, math.sqrt(most / max(self.counts[name], 1e-12)))
            step = mean[name].to(torch.float64) - current.to(torch.float64)
            out[name] = (current.to(torch.float64) + scale * step).to(current.dtype)
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = {str(k): float(v) for k, v in (state.get("counts") or {}).items()}
