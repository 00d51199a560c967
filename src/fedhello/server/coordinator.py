"""Server-side round logic, independent of transport: sample, allocate, aggregate, evaluate.

An engine drives it: `configure(round)` gives each sampled client's plan, the engine gets the clients'
updates however it likes, then hands them to `aggregate`. All randomness is derived from
(seed, round), so a round's decisions do not depend on what ran before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fedhello.aggregation import AGGREGATORS, Aggregator
from fedhello.aggregation.base import LayerSums
from fedhello.aggregation.server_opt import with_server_optimizer
from fedhello.allocation import ALLOCATORS, Allocator
from fedhello.allocation.constraints import DepthAwareAllocator
from fedhello.allocation.importance import empirical_fisher
from fedhello.models.adapter import extract_state, load_state
from fedhello.models.layers import HEAD
from fedhello.plan import ClientUpdate, Plan
from fedhello.privacy import PrivateAggregator
from fedhello.seeding import ALLOCATION, SAMPLING, eval_subset_rng, round_rng
from fedhello.server.federation import Federation
from fedhello.tasks.lm_eval_scorer import LMEvalScorer, lm_eval_scorer


def build_allocator(federation: Federation) -> Allocator:
    """The configured strategy (`strategy.name`) with its options, wrapped depth-aware when `strategy.depth_aware`."""
    strategy = federation.config.strategy
    constraints = federation.client_constraints()
    cls = ALLOCATORS.get(strategy.name)
    allocator = cls(strategy, federation.num_layers, federation.tier_budgets, federation.config.lora.r, constraints)
    if strategy.depth_aware:  # budget tiers: keep every plan at or above its tier's lowest affordable layer
        allocator = DepthAwareAllocator(allocator, constraints)
    return allocator


def build_aggregator(federation: Federation) -> Aggregator:
    """The configured aggregator (`aggregation.name`) with its options, wrapped by differential privacy when
    `privacy.mode` is on, then by the server optimizer (`aggregation.server_optimizer`), which steps along the
    (privatised) aggregate."""
    config = federation.config
    aggregator = AGGREGATORS.get(config.aggregation.name).from_config(config.aggregation)
    if config.privacy.enabled:
        fed = config.federation
        aggregator = PrivateAggregator(aggregator, config.privacy, config.seed, fed.num_clients, fed.clients_per_round)
    return with_server_optimizer(aggregator, config.aggregation)


class Coordinator:
    """Holds the global adapter state and the server's decisions for every round."""

    def __init__(
        self,
        federation: Federation,
        allocator: Allocator | None = None,
        aggregator: Aggregator | None = None,
        scorer: LMEvalScorer | None = None,
    ) -> None:
        self.federation = federation
        self.config = federation.config
        self.allocator = allocator or build_allocator(federation)
        self.aggregator = aggregator or build_aggregator(federation)
        # lm-eval benchmarks (`eval.lm_eval_tasks`); engines build the scorer before the model to fail fast
        self.scorer = scorer or lm_eval_scorer(self.config)
        self.global_state: dict[str, torch.Tensor] = extract_state(federation.model, list(federation.layout))
        self._eval_subset = None

    def sample_clients(self, round_num: int) -> list[int]:
        fed = self.config.federation
        rng = round_rng(self.config.seed, round_num, SAMPLING)
        chosen = rng.choice(fed.num_clients, fed.clients_per_round, replace=False)
        return sorted(int(c) for c in chosen)

    def configure(self, round_num: int) -> tuple[dict[int, Plan], dict[str, Any] | None]:
        """Plans for this round's sampled clients, and the importance refresh log if one happened."""
        importance = None
        if self.allocator.wants_importance(round_num):
            importance = self.refresh_importance(round_num)
        budgets = {cid: self.federation.budget(cid) for cid in self.sample_clients(round_num)}
        plans = self.allocator.allocate(round_num, budgets, round_rng(self.config.seed, round_num, ALLOCATION))
        return self.aggregator.configure(plans), importance

    def refresh_importance(self, round_num: int) -> dict[str, Any]:
        """Estimate the empirical Fisher of all LoRA tensors on the proxy set; give scores to the allocator."""
        fed = self.federation
        load_state(fed.model, self.global_state)
        names = [n for n, layer in fed.layout.items() if layer != HEAD]
        fisher = empirical_fisher(fed.model, fed.task.loss, fed.proxy, fed.task.collate, names)
        scores = self.allocator.score_layers(fisher, fed.layout)
        return {"round": round_num, **self.allocator.set_importance(round_num, scores)}

    def aggregate(self, updates: Sequence[ClientUpdate], round_num: int = 0) -> list[str]:
        """Replace the global state by the aggregate of `updates`; the allocator then sees them (`observe`).
        Returns the aggregator's notes for the round's warnings (`Aggregator.notes`).

        Updates that trained on no samples (a node with empty data) carry no weight: they are the global state
        sent back, and averaged in with uniform weighting they would only shrink the round's step. With none
        that trained, the global state stays as it is."""
        trained = [u for u in updates if u.num_samples > 0]
        if trained:
            self.global_state = self.aggregator.aggregate(self.global_state, trained)
        self.allocator.observe(round_num, updates)
        return self.aggregator.notes() if trained else []

    def aggregate_sums(self, reduced: LayerSums, updates: Sequence[ClientUpdate], round_num: int = 0) -> list[str]:
        """Replace the global state by the mean the round's `LayerSums` give (secure aggregation: the server sees
        the sums, and `updates` carry only their metrics); the allocator then sees the updates. Returns the
        aggregator's notes."""
        if reduced.sums:
            self.global_state = self.aggregator.apply_sums(self.global_state, reduced, updates)
        self.allocator.observe(round_num, updates)
        return self.aggregator.notes() if reduced.sums else []

    def benchmarks_due(self, round_num: int) -> bool:
        """Whether the lm-eval tasks are scored after `round_num` (`eval.lm_eval_every` and the last round)."""
        return self.scorer is not None and self.scorer.due(round_num)

    def evaluate(self, full: bool = True, benchmarks: bool = False) -> dict[str, float]:
        """Metrics of the global model on the test split, or (`full=False` with `federation.eval_subset`) on
        a fixed seeded subset of it: cheap intermediate evaluations, the same samples every time. With
        `benchmarks`, also its lm-eval scores (`lm_eval.<task>.<metric>`)."""
        load_state(self.federation.model, self.global_state)
        test = self.federation.test
        size = self.config.federation.eval_subset
        if not full and size is not None and size < len(test):
            if self._eval_subset is None:
                picked = eval_subset_rng(self.config.seed).permutation(len(test))[:size]
                self._eval_subset = test.select(sorted(int(i) for i in picked))
            test = self._eval_subset
        metrics = self.federation.task.evaluate(self.federation.model, test)
        if benchmarks and self.scorer is not None:
            metrics.update(self.scorer.score(self.federation.model, self.federation.task))
        return metrics
