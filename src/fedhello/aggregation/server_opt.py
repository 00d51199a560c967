"""Server optimizers on per-layer pseudo-gradients (`aggregation.server_optimizer`; Reddi et al. 2021, "Adaptive
Federated Optimization"; Hsu et al. 2019 for FedAvgM). `ServerOptimizer` wraps any aggregator: the aggregator's new
state minus the global state is the round's pseudo-gradient Delta, and the optimizer steps the global state along
it. The rules are those of Flower's `flwr.serverapp.strategy` FedAvgM, FedAdam, FedYogi and FedAdagrad, entry by
entry (Delta in Flower's sign: the aggregate minus the current weights; FedAvgM's old-minus-new flips both ways):

  fedavgm     m <- mu m + Delta;                                  w <- w + lr m
  fedadam     m <- b1 m + (1 - b1) Delta; v <- b2 v + (1 - b2) Delta^2
              w <- w + lr sqrt(1 - b2^(t+1)) / (1 - b1^(t+1)) m / (sqrt(v) + tau)   (t: steps so far, this one too)
  fedyogi     m as fedadam; v <- v - (1 - b2) Delta^2 sign(v - Delta^2);  w <- w + lr m / (sqrt(v) + tau)
  fedadagrad  v <- v + Delta^2;                                   w <- w + lr Delta / (sqrt(v) + tau)

with zero initial moments, like Flower. Per layer: only the entries some client uploaded this round (or that the
aggregator changed) are stepped; every other entry keeps its value AND its moments (and, for FedAdam, its step
count t), so a layer nobody trained for a while resumes where it stopped. The moments are server state: they are
tensors in `state_dict()`, which checkpoints store in safetensors (`fedhello.server.checkpoint`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from fedhello.aggregation.base import Aggregator, LayerSums
from fedhello.models.ranks import coverage
from fedhello.plan import ClientUpdate

if TYPE_CHECKING:
    from fedhello.config import AggregationConfig

Moments = dict[str, torch.Tensor]


class Rule(ABC):
    """One server optimizer's update of an entry-wise state (`moments`, float64 tensors of a tensor's shape)."""

    moments: ClassVar[tuple[str, ...]]
    default_lr: ClassVar[float]  # Flower's default server learning rate (eta) of the strategy

    def __init__(self, settings: AggregationConfig) -> None:
        self.settings = settings
        self.lr = settings.server_lr if settings.server_lr is not None else self.default_lr

    @abstractmethod
    def step(self, state: Moments, delta: torch.Tensor) -> tuple[Moments, torch.Tensor]:
        """The new moments and the change added to the weights, for pseudo-gradient `delta` (float64)."""


class FedAvgM(Rule):
    moments = ("m",)
    default_lr = 1.0

    def step(self, state, delta):  # noqa: ANN001
        m = self.settings.server_momentum * state["m"] + delta
        return {"m": m}, self.lr * m


class FedAdam(Rule):
    moments = ("m", "v", "t")
    default_lr = 0.1

    def step(self, state, delta):  # noqa: ANN001
        b1, b2, tau = self.settings.beta1, self.settings.beta2, self.settings.tau
        m = b1 * state["m"] + (1 - b1) * delta
        v = b2 * state["v"] + (1 - b2) * delta.pow(2)
        t = state["t"] + 1
        lr = self.lr * torch.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1))  # Flower's bias correction
        return {"m": m, "v": v, "t": t}, lr * m / (v.sqrt() + tau)


class FedYogi(Rule):
    moments = ("m", "v")
    default_lr = 0.01

    def step(self, state, delta):  # noqa: ANN001
        b1, b2, tau = self.settings.beta1, self.settings.beta2, self.settings.tau
        m = b1 * state["m"] + (1 - b1) * delta
        square = delta.pow(2)
        v = state["v"] - (1 - b2) * square * torch.sign(state["v"] - square)
        return {"m": m, "v": v}, self.lr * m / (v.sqrt() + tau)


class FedAdagrad(Rule):
    moments = ("v",)
    default_lr = 0.1

    def step(self, state, delta):  # noqa: ANN001
        v = state["v"] + delta.pow(2)
        return {"v": v}, self.lr * delta / (v.sqrt() + self.settings.tau)


SERVER_OPTIMIZERS: dict[str, type[Rule]] = {
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
}


def touched(global_state: dict[str, torch.Tensor], updates: Sequence[ClientUpdate]) -> dict[str, torch.Tensor]:
    """Per tensor, the entries some update uploaded (a rank-truncated factor covers its first components)."""
    masks: dict[str, torch.Tensor] = {}
    for u in updates:
        for name, tensor in u.tensors.items():
            covered = coverage(name, tensor, global_state[name].shape)
            masks[name] = masks[name] | covered if name in masks else covered
    return masks


class ServerOptimizer(Aggregator):
    """Wraps an aggregator (`inner`): its result is the round's pseudo-gradient, which `rule` applies per entry
    (see the module docstring). Every other hook is the inner aggregator's."""

    def __init__(self, inner: Aggregator, rule: Rule) -> None:
        super().__init__(inner.weighting)
        self.inner = inner
        self.rule = rule
        self.accepts = inner.accepts  # type: ignore[misc]  (per instance: the inner rule's)
        self.moments: dict[str, Moments] = {}

    def aggregate(self, global_state, updates):  # noqa: ANN001
        target = self.inner.aggregate(global_state, updates)
        return self._step(global_state, target, touched(global_state, updates))

    def apply_sums(self, global_state, reduced: LayerSums, updates: Sequence[ClientUpdate] = ()):  # noqa: ANN001
        target = self.inner.apply_sums(global_state, reduced, updates)
        return self._step(global_state, target, {name: counts > 0 for name, counts in reduced.counts.items()})

    def _step(
        self, global_state: dict[str, torch.Tensor], target: dict[str, torch.Tensor], masks: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name, current in global_state.items():
            mask = target[name] != current
            if name in masks:
                mask = mask | masks[name]
            if not bool(mask.any()):  # nobody trained it: its value and its moments stay
                out[name] = target[name]
                continue
            base = current.to(torch.float64)
            state = self.moments.get(name) or {k: torch.zeros_like(base) for k in self.rule.moments}
            new, change = self.rule.step(state, target[name].to(torch.float64) - base)
            self.moments[name] = {k: torch.where(mask, new[k], state[k]) for k in self.rule.moments}
            out[name] = torch.where(mask, base + change, base).to(current.dtype)
        return out

    def expected_shapes(self, plan, global_state, layout):  # noqa: ANN001
        return self.inner.expected_shapes(plan, global_state, layout)

    def configure(self, plans):  # noqa: ANN001
        return self.inner.configure(plans)

    def record(self) -> dict[str, Any]:
        return self.inner.record()

    def stop_reason(self) -> str | None:
        return self.inner.stop_reason()

    def notes(self) -> list[str]:
        return self.inner.notes()

    def state_dict(self) -> dict[str, Any]:
        """The inner aggregator's state and the moments (tensors: the checkpoint stores them in safetensors)."""
        return {"inner": self.inner.state_dict(), "moments": {n: dict(m) for n, m in self.moments.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state.get("inner") or {})
        self.moments = {
            str(name): {k: torch.as_tensor(v, dtype=torch.float64) for k, v in moments.items()}
            for name, moments in (state.get("moments") or {}).items()
        }


def with_server_optimizer(aggregator: Aggregator, settings: AggregationConfig) -> Aggregator:
    """`aggregator` wrapped by the configured server optimizer (`aggregation.server_optimizer`), or as it is."""
    if settings.server_optimizer == "none":
        return aggregator
    return ServerOptimizer(aggregator, SERVER_OPTIMIZERS[settings.server_optimizer](settings))
