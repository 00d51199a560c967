"""The upload/accept declarations that the config loader trusts are true: every pairing the loader accepts
aggregates every allocator's real uploads into a global state of the right shapes that moved where clients
trained, and every pairing it refuses would have corrupted or silently ignored some upload."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedhello.aggregation import AGGREGATORS
from fedhello.allocation import ALLOCATORS
from fedhello.config import strategy_options
from fedhello.models.layers import HEAD, keys_for_layers
from fedhello.models.ranks import lora_factor, truncate
from fedhello.plan import ClientUpdate, Plan

NUM_LAYERS, R_MAX, WIDTH = 4, 4, 6
BUDGETS = {0: 1, 1: 2, 2: 4, 3: 4}  # client -> layer budget (tiers 1, 2 and 4 of 4 layers)


def layout() -> dict[str, int]:
    names = {}
    for layer in range(NUM_LAYERS):
        for module in ("query", "value"):
            for factor in ("A", "B"):
                names[f"m.encoder.layer.{layer}.attention.{module}.lora_{factor}.default.weight"] = layer
    names["m.classifier.modules_to_save.default.weight"] = HEAD
    return names


def global_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    shapes = {"A": (R_MAX, WIDTH), "B": (WIDTH, R_MAX), None: (3, WIDTH)}
    return {name: torch.randn(shapes[lora_factor(name)], generator=g) for name in layout()}


def client_upload(client_id: int, plan: Plan, state: dict[str, torch.Tensor]) -> ClientUpdate:
    """What the trainer sends for `plan`: the plan's tensors, moved, truncated to the plan's ranks, without
    frozen factors."""
    g = torch.Generator().manual_seed(100 + client_id)
    frozen = {f for f, train in (("A", plan.train_lora_a), ("B", plan.train_lora_b)) if not train}
    tensors = {}
    for name in keys_for_layers(layout(), plan.layers, plan.train_head):
        if lora_factor(name) in frozen:
            continue
        moved = state[name] + torch.randn(state[name].shape, generator=g)
        rank = plan.ranks.get(layout()[name]) if plan.ranks else None
        tensors[name] = truncate(name, moved, rank)
    return ClientUpdate(client_id, plan, tensors, num_samples=10 + client_id)


def round_of(strategy: str) -> list[ClientUpdate]:
    cls = ALLOCATORS.get(strategy)
    extra = {"lora_rank": R_MAX}
    allocator = cls(strategy_options({"name": strategy}), NUM_LAYERS, sorted(set(BUDGETS.values())), **extra)
    plans = allocator.allocate(1, BUDGETS, np.random.default_rng(0))
    state = global_state()
    return [client_upload(cid, plan, state) for cid, plan in sorted(plans.items())]


def aggregation_is_true(aggregation: str, updates: list[ClientUpdate]) -> bool:
    """Global shapes kept, and every tensor somebody uploaded changed."""
    before = global_state()
    try:
        after = AGGREGATORS.get(aggregation)("uniform").aggregate(before, updates)
    except (ValueError, RuntimeError):
        return False
    if any(after[n].shape != before[n].shape for n in before):
        return False
    uploaded = {name for u in updates for name in u.tensors}
    return all(not torch.equal(after[name], before[name]) for name in uploaded)


@pytest.mark.parametrize("strategy", ALLOCATORS.names())
def test_declarations_match_what_aggregation_does(strategy):
    updates = round_of(strategy)
    assert updates, f"{strategy} planned nobody"
    for aggregation in AGGREGATORS.names():
        declared = ALLOCATORS.get(strategy).uploads <= AGGREGATORS.get(aggregation).accepts
        observed = aggregation_is_true(aggregation, updates)
        if declared:
            assert observed, f"{strategy} + {aggregation} is accepted but does not aggregate truly"
            continue
        # a refused pairing must be one that really breaks whenever an upload of a refused kind comes in
        refused = ALLOCATORS.get(strategy).uploads - AGGREGATORS.get(aggregation).accepts
        if any(_has_kind(u, kind) for u in updates for kind in refused):
            assert not observed, f"{strategy} + {aggregation} is refused but aggregates fine"


def _has_kind(update: ClientUpdate, kind: str) -> bool:
    state = global_state()
    if kind == "rank-truncated":
        return any(t.shape != state[n].shape for n, t in update.tensors.items())
    if kind == "one-factor":
        return not (update.plan.train_lora_a and update.plan.train_lora_b)
    return True


def test_fedavg_refuses_a_truncated_upload_instead_of_reshaping_the_global_state():
    state = global_state()
    name = next(n for n in state if lora_factor(n) == "A")
    update = ClientUpdate(0, Plan((0,), ranks={0: 1}), {name: state[name][:1] + 1}, 10)
    with pytest.raises(ValueError, match="rank-truncated"):
        AGGREGATORS.get("fedavg")("uniform").aggregate(state, [update])
