"""Server-side round logic, independent of transport: sample, allocate, aggregate, evaluate.

An engine drives it: `configure(round)` gives each sampled client's plan, the engine gets the clients'
updates however it likes, then hands them to `aggregate`. All randomness is derived from
(seed, round), so a round's decisions do not depend on what ran before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from fedhello.aggregation import AGGREGATORS, Aggregator
from fedhello.allocation import ALLOCATORS, Allocator
from fedhello.allocation.constraints import DepthAwareAllocator
from fedhello.allocation.importance import empirical_fisher
from fedhello.errors import ConfigError
from fedhello.models.layers import HEAD
from fedhello.plan import ClientUpdate, Plan
from fedhello.server.federation import Federation
from fedhello.training.trainer import extract_state, load_state

_SAMPLING, _ALLOCATION = 0, 1  # independent random streams per round
_EVAL_SUBSET = 3  # stream of the fixed evaluation subset (the loop's dropout stream is 2)


def build_allocator(federation: Federation) -> Allocator:
    strategy = federation.config.strategy
    if strategy.name not in ALLOCATORS:
        raise ConfigError("strategy.name", f"unknown strategy '{strategy.name}'", f"use one of {ALLOCATORS.names()}")
    cls = ALLOCATORS.get(strategy.name)
    # rank-heterogeneous allocators (HetLoRA, FlexLoRA, LEGEND) hand out ranks up to the adapter's rank
    extra: dict[str, Any] = {"lora_rank": federation.config.lora.r} if getattr(cls, "needs_lora_rank", False) else {}
    if getattr(cls, "needs_constraints", False):  # budget-true allocators solve their own knapsack
        extra["constraints"] = federation.client_constraints()
    allocator = cls(strategy, federation.num_layers, federation.tier_budgets, **extra)
    if strategy.depth_aware:  # budget tiers: keep every plan at or above its tier's lowest affordable layer
        allocator = DepthAwareAllocator(allocator, federation.client_constraints())
    return allocator


def build_aggregator(federation: Federation) -> Aggregator:
    settings = federation.config.aggregation
    if settings.name not in AGGREGATORS:
        raise ConfigError(
            "aggregation.name", f"unknown aggregator '{settings.name}'", f"use one of {AGGREGATORS.names()}"
        )
    return AGGREGATORS.get(settings.name)(settings.weighting)


class Coordinator:
    """Holds the global adapter state and the server's decisions for every round."""

    def __init__(
        self, federation: Federation, allocator: Allocator | None = None, aggregator: Aggregator | None = None
    ) -> None:
        self.federation = federation
        self.config = federation.config
        self.allocator = allocator or build_allocator(federation)
        self.aggregator = aggregator or build_aggregator(federation)
        self.global_state: dict[str, torch.Tensor] = extract_state(federation.model, list(federation.layout))
        self._eval_subset = None

    def _rng(self, round_num: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, round_num, stream])

    def sample_clients(self, round_num: int) -> list[int]:
        fed = self.config.federation
        chosen = self._rng(round_num, _SAMPLING).choice(fed.num_clients, fed.clients_per_round, replace=False)
        return sorted(int(c) for c in chosen)

    def configure(self, round_num: int) -> tuple[dict[int, Plan], dict[str, Any] | None]:
        """Plans for this round's sampled clients, and the importance refresh log if one happened."""
        importance = None
        if self.allocator.wants_importance(round_num):
            importance = self.refresh_importance(round_num)
        budgets = {cid: self.federation.budget(cid) for cid in self.sample_clients(round_num)}
        plans = self.allocator.allocate(round_num, budgets, self._rng(round_num, _ALLOCATION))
        return plans, importance

    def refresh_importance(self, round_num: int) -> dict[str, Any]:
        """Estimate the empirical Fisher of all LoRA tensors on the proxy set; give scores to the allocator."""
        fed = self.federation
        load_state(fed.model, self.global_state)
        names = [n for n, layer in fed.layout.items() if layer != HEAD]
        fisher = empirical_fisher(fed.model, fed.task.loss, fed.proxy, fed.task.collate, names)
        scores = self.allocator.score_layers(fisher, fed.layout)
        return {"round": round_num, **self.allocator.set_importance(round_num, scores)}

    def aggregate(self, updates: Sequence[ClientUpdate], round_num: int = 0) -> None:
        self.global_state = self.aggregator.aggregate(self.global_state, updates)
        self.allocator.observe(round_num, updates)

    def evaluate(self, full: bool = True) -> dict[str, float]:
        """Metrics of the global model on the test split, or (`full=False` with `federation.eval_subset`) on
        a fixed seeded subset of it: cheap intermediate evaluations, the same samples every time."""
        load_state(self.federation.model, self.global_state)
        test = self.federation.test
        size = self.config.federation.eval_subset
        if not full and size is not None and size < len(test):
            if self._eval_subset is None:
                picked = np.random.default_rng([self.config.seed, _EVAL_SUBSET]).permutation(len(test))[:size]
                self._eval_subset = test.select(sorted(int(i) for i in picked))
            test = self._eval_subset
        return self.federation.task.evaluate(self.federation.model, test)


def round_record(
    round_num: int,
    federation: Federation,
    updates: Sequence[ClientUpdate],
    download_bytes: int,
    wall_seconds: float,
    evaluation: dict[str, float] | None,
) -> dict[str, Any]:
    """One line of metrics.jsonl: global metrics plus what every client trained and sent."""
    clients = [
        {
            "id": u.client_id,
            "tier": federation.client_tiers[u.client_id],
            "layers": list(u.plan.layers),
            "num_samples": u.num_samples,
            **{k: v for k, v in u.metrics.items()},
        }
        for u in updates
    ]
    return {
        "round": round_num,
        "accuracy": evaluation["accuracy"] if evaluation else None,
        "loss": evaluation["loss"] if evaluation else None,
        "macro_f1": evaluation.get("macro_f1") if evaluation else None,
        "eval_samples": int(evaluation["samples"]) if evaluation and "samples" in evaluation else None,
        "train_loss": float(np.mean([u.metrics.get("train_loss", np.nan) for u in updates])) if updates else None,
        "wall_seconds": wall_seconds,
        "train_seconds": sum(u.metrics.get("seconds", 0.0) for u in updates),
        "bytes_up": sum(u.num_bytes for u in updates),
        "bytes_down": download_bytes * len(updates),
        "clients": clients,
    }
