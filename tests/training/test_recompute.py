"""Activation recomputation per client: the same update, switched on and off on the shared model."""

import pytest
import torch

from fedhello.models.recompute import block_modules, recomputed_blocks
from fedhello.plan import Plan
from fedhello.server import Coordinator, build_federation
from fedhello.training import LocalTrainer


def test_recomputed_blocks_start_at_the_lowest_trained_layer():
    assert list(recomputed_blocks((1, 3), 2, 4)) == [1, 2]
    assert list(recomputed_blocks((0, 3), 9, 4)) == [0, 1, 2, 3]
    assert list(recomputed_blocks((2,), 0, 4)) == [] and list(recomputed_blocks((), 3, 4)) == []


@pytest.mark.parametrize("layers, recompute", [((0, 1, 2, 3), 3), ((0, 3), 2), ((2, 3), 1)])
def test_recomputing_leaves_the_update_equal_and_switches_back_off(tiny_config, layers, recompute):
    # dropout stays on (the tiny BERT's hidden dropout 0.1): non-reentrant checkpointing replays the RNG state,
    # so the recomputed forward draws the same masks. Tolerance: equal to 1e-6 (float32 sums in another order).
    fed = build_federation(tiny_config)
    global_state = Coordinator(fed).global_state
    trainer = LocalTrainer(fed.model, fed.task, fed.layout, tiny_config.train)
    seen: list[set[int]] = []

    def spy(module, args):  # which blocks recompute during this client's training
        seen.append({i for i, b in block_modules(fed.model).items() if b.gradient_checkpointing})

    handle = fed.model.register_forward_pre_hook(spy)
    kept = trainer.train(0, Plan(layers), global_state, fed.client_data(0), seed=5)
    recomputed = trainer.train(0, Plan(layers, recompute=recompute), global_state, fed.client_data(0), seed=5)
    handle.remove()
    assert set(kept.tensors) == set(recomputed.tensors)
    for name, tensor in kept.tensors.items():
        torch.testing.assert_close(recomputed.tensors[name], tensor, rtol=0, atol=1e-6)
    assert kept.metrics["train_loss"] == pytest.approx(recomputed.metrics["train_loss"], abs=1e-6)
    assert seen[0] == set() and seen[-1] == set(recomputed_blocks(layers, recompute, 4))
    # the shared model keeps its activations again for the next client
    assert not any(b.gradient_checkpointing for b in block_modules(fed.model).values())


def test_recomputation_is_carried_by_the_plan_and_its_record():
    plan = Plan((0, 5), recompute=4)
    assert Plan.from_json(plan.to_json()) == plan
    assert "recompute" not in Plan((4, 5)).to_json()
