"""Simulated hostile clients (`attack:`): what each kind sends, on hand-made tensors; which clients are hostile
(seeded, fixed for the run); the trainer applies it to what it uploads and the round record marks the client."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fedhello.config import RunConfig, config_from_dict
from fedhello.errors import ConfigError
from fedhello.plan import ClientUpdate, Plan
from fedhello.server.loop import RoundOutcome, round_record
from fedhello.training.attack import hostile_clients, poison


def config(**attack) -> RunConfig:  # noqa: ANN003
    return config_from_dict({"federation": {"num_clients": 10, "clients_per_round": 3}, "attack": attack})


GLOBAL = {"a": torch.ones(2, 3), "b": torch.zeros(4)}
TRAINED = {"a": torch.full((2, 3), 3.0), "b": torch.tensor([1.0, -1.0, 2.0, -2.0])}


def test_sign_flip_and_scaled_send_the_update_reversed_or_blown_up():
    flipped = poison(config(hostile=1, scale=2.0).attack, TRAINED, GLOBAL, 1, 1, 0)
    assert torch.equal(flipped["a"], torch.full((2, 3), -3.0))  # 1 - 2 * (3 - 1)
    assert torch.equal(flipped["b"], torch.tensor([-2.0, 2.0, -4.0, 4.0]))
    scaled = poison(config(hostile=1, kind="scaled", scale=10.0).attack, TRAINED, GLOBAL, 1, 1, 0)
    assert torch.equal(scaled["a"], torch.full((2, 3), 21.0)) and torch.equal(scaled["b"], 10 * TRAINED["b"])
    assert torch.equal(TRAINED["a"], torch.full((2, 3), 3.0)), "the trained tensors are not modified"


def test_random_noise_is_as_large_as_the_honest_change_and_seeded_per_round_and_client():
    attack = config(hostile=1, kind="random", scale=3.0).attack
    big = {"a": torch.ones(300, 300)}
    trained = {"a": big["a"] + 0.5}  # honest change: RMS 0.5
    sent = poison(attack, trained, big, 1, 2, 7)
    assert (sent["a"] - 1).pow(2).mean().sqrt().item() == pytest.approx(1.5, rel=0.01)
    assert torch.equal(sent["a"], poison(attack, trained, big, 1, 2, 7)["a"]), "the same draw again (resume)"
    for other in ((2, 2, 7), (1, 3, 7), (1, 2, 8)):  # another seed, round or client: another draw
        assert not torch.equal(sent["a"], poison(attack, trained, big, *other)["a"])
    half = poison(attack, {"a": trained["a"].half()}, {"a": big["a"].half()}, 1, 2, 7)["a"]
    assert half.dtype == torch.float16


def test_a_rank_truncated_upload_is_poisoned_against_its_block_of_the_global_tensor():
    state = {"x.lora_A.weight": torch.arange(12.0).reshape(4, 3)}
    upload = {"x.lora_A.weight": state["x.lora_A.weight"][:2] + 1.0}
    sent = poison(config(hostile=1).attack, upload, state, 1, 1, 0)["x.lora_A.weight"]
    assert torch.equal(sent, state["x.lora_A.weight"][:2] - 1.0)


def test_the_hostile_clients_are_seeded_fixed_and_chosen_one_way():
    assert hostile_clients(config()) == frozenset()
    chosen = hostile_clients(config(hostile=3))
    assert len(chosen) == 3 and chosen <= set(range(10))
    assert hostile_clients(config(hostile=3)) == chosen, "the same clients in every process and round"
    others = {hostile_clients(config_from_dict({**config(hostile=3).model_dump(), "seed": s})) for s in range(2, 8)}
    assert len(others | {chosen}) > 1, "the draw follows the seed"
    assert hostile_clients(config(hostile_ids=[4, 1])) == {1, 4}


@pytest.mark.parametrize(
    ("attack", "field"),
    [
        ({"hostile": 2, "hostile_ids": [1]}, "attack.hostile_ids"),
        ({"hostile": 11}, "attack.hostile"),
        ({"hostile_ids": [10]}, "attack.hostile_ids"),
        ({"hostile_ids": [1, 1]}, "attack.hostile_ids"),
        ({"hostile": 1, "kind": "scaled"}, "attack.scale"),
    ],
)
def test_an_impossible_attack_is_one_line_naming_the_field(attack, field):
    with pytest.raises(ConfigError) as info:
        config(**attack)
    assert f"'{field}'" in str(info.value) and "fix:" in str(info.value) and "\n" not in str(info.value)


def test_the_trainer_poisons_a_hostile_clients_upload(tiny_config, monkeypatch):
    from fedhello.server import Coordinator, build_federation
    from fedhello.training import LocalTrainer

    tiny_config.train.max_steps = 2
    fed = build_federation(tiny_config)
    state = Coordinator(fed).global_state
    trainer = LocalTrainer(fed.model, fed.task, fed.layout, tiny_config.train)
    honest = trainer.train(0, Plan((3,)), state, fed.client_data(0), seed=5, round_num=1)
    hostile = tiny_config.model_copy(deep=True)
    hostile.attack.hostile_ids = [0]
    monkeypatch.setattr(fed.task, "config", hostile)
    sent = trainer.train(0, Plan((3,)), state, fed.client_data(0), seed=5, round_num=1)
    assert sent.tensors.keys() == honest.tensors.keys()
    for name, tensor in honest.tensors.items():
        torch.testing.assert_close(sent.tensors[name], 2 * state[name] - tensor)
    assert any(not torch.equal(sent.tensors[n], t) for n, t in honest.tensors.items())
    assert sent.metrics["train_loss"] == honest.metrics["train_loss"], "it trained like an honest client"


def test_the_round_record_marks_the_hostile_clients():
    run = config(hostile_ids=[2])
    outcome = RoundOutcome(accepted=[ClientUpdate(c, Plan((0,)), {}, 5) for c in (1, 2)])
    federation = SimpleNamespace(client_tiers={1: 0, 2: 0}, config=run)
    record = round_record(1, federation, outcome, 0, 0.0, None, False, False)
    assert [c.get("hostile", False) for c in record["clients"]] == [False, True]
