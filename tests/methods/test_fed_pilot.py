"""Fed-pilot aggregation: masked FedAvg plus a larger step for rarely updated tensors."""

import json
import math

import torch

from fedhello.aggregation import AGGREGATORS
from fedhello.methods.fed_pilot.aggregator import MAX_SCALE
from fedhello.plan import ClientUpdate, Plan


def update(cid, tensors, n=1):
    return ClientUpdate(client_id=cid, plan=Plan((0,)), tensors=tensors, num_samples=n)


def test_rarely_updated_tensors_take_a_larger_step_and_state_round_trips():
    state = {"low": torch.zeros(2), "top": torch.zeros(2), "head": torch.zeros(2)}
    updates = [update(i, {"top": torch.ones(2), "head": torch.ones(2)}) for i in range(4)]
    updates.append(update(9, {"low": torch.ones(2), "top": torch.ones(2), "head": torch.ones(2)}))
    aggregator = AGGREGATORS.get("fedpilot")("uniform")
    new = aggregator.aggregate(state, updates)
    assert torch.allclose(new["top"], torch.ones(2)) and torch.allclose(new["head"], torch.ones(2))
    # 'low' was trained by 1 of 5 clients: sqrt(5) > MAX_SCALE, so it moves MAX_SCALE times its mean step
    assert math.sqrt(5) > MAX_SCALE
    assert torch.allclose(new["low"], torch.full((2,), MAX_SCALE))
    again = AGGREGATORS.get("fedpilot")("uniform")
    again.load_state_dict(aggregator.state_dict())
    assert again.aggregate(new, updates)["low"].tolist() == aggregator.aggregate(new, updates)["low"].tolist()


def test_untrained_tensors_stay_unchanged_and_inputs_are_not_modified():
    state = {"a": torch.full((2,), 3.0), "b": torch.zeros(2)}
    new = AGGREGATORS.get("fedpilot")("samples").aggregate(state, [update(0, {"b": torch.ones(2)}, n=5)])
    assert torch.equal(new["a"], state["a"]) and torch.equal(state["b"], torch.zeros(2))


def test_restored_counts_continue_the_moving_average():
    """A round whose updates differ from the last one's: an aggregator restored from `state_dict` must aggregate
    it exactly as the one that never stopped (identical rounds would hide a reset: they are a fixed point)."""
    state = {"low": torch.zeros(2), "top": torch.zeros(2)}
    first = [update(i, {"top": torch.ones(2)}) for i in range(4)] + [update(9, {"low": torch.ones(2)})]
    second = [update(i, {"low": torch.ones(2), "top": torch.ones(2)}) for i in range(2)]
    running = AGGREGATORS.get("fedpilot")("uniform")
    after_first = running.aggregate(state, first)
    restored = AGGREGATORS.get("fedpilot")("uniform")
    restored.load_state_dict(json.loads(json.dumps(running.state_dict())))  # as a checkpoint stores it
    fresh = AGGREGATORS.get("fedpilot")("uniform")
    expected = running.aggregate(after_first, second)
    assert all(torch.equal(restored.aggregate(after_first, second)[k], expected[k]) for k in state)
    assert not torch.equal(fresh.aggregate(after_first, second)["low"], expected["low"]), "the test can fail"
