"""The personalised methods' update rules on hand-made tensors (FedSA-LoRA: A shared, B kept; pFedLoRA: the head
kept, trained in a phase of its own before the shared LoRA), and their resume equal to an uninterrupted run."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from fedhello.aggregation.base import expected_shapes
from fedhello.aggregation.fedavg import MaskedFedAvg
from fedhello.config import config_from_dict
from fedhello.engines import ENGINES
from fedhello.methods import METHODS, method_config
from fedhello.methods.pfedlora.client import PFedLoRAClient
from fedhello.models.layers import HEAD
from fedhello.plan import ClientUpdate, Plan
from fedhello.rundir.files import CLIENTS_DIR
from fedhello.training.store import ClientStore

A0, B0 = "l0.lora_A.default.weight", "l0.lora_B.default.weight"
A1, B1 = "l1.lora_A.default.weight", "l1.lora_B.default.weight"
H = "classifier.weight"
LAYOUT = {A0: 0, B0: 0, A1: 1, B1: 1, H: HEAD}


def global_state() -> dict[str, torch.Tensor]:
    return {
        A0: torch.zeros(2, 3),
        B0: torch.zeros(3, 2),
        A1: torch.zeros(2, 3),
        B1: torch.zeros(3, 2),
        H: torch.zeros(2),
    }


def test_fedsa_clients_send_a_and_the_head_keep_b_and_the_server_averages_a():
    assert METHODS.get("fedsa-lora").overrides["strategy.name"] == "fedsa"  # a registered preset
    plan = Plan((0, 1), personal=("B",))
    assert set(expected_shapes(plan, global_state(), LAYOUT)) == {A0, A1, H}, "B is neither expected nor sent"
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))) == plan, "the plan travels with its personal part"
    ups = [
        ClientUpdate(0, plan, {A0: torch.full((2, 3), 1.0), A1: torch.full((2, 3), 2.0), H: torch.ones(2)}, 1),
        ClientUpdate(1, plan, {A0: torch.full((2, 3), 4.0), A1: torch.full((2, 3), 8.0), H: torch.ones(2)}, 3),
    ]
    new = MaskedFedAvg().aggregate(global_state(), ups)
    assert torch.allclose(new[A0], torch.full((2, 3), (1 + 4) / 2))  # the mean over A's senders (uniform)
    assert torch.allclose(new[A1], torch.full((2, 3), (2 + 8) / 2))
    assert torch.equal(new[B0], torch.zeros(3, 2)) and torch.equal(new[B1], torch.zeros(3, 2)), "B never moves"


def test_pfedlora_trains_the_personal_head_first_then_the_shared_lora_and_keeps_the_head():
    plan = Plan((0, 1), personal=("head",))
    assert set(expected_shapes(plan, global_state(), LAYOUT)) == {A0, B0, A1, B1}, "the head is not sent"
    options = config_from_dict({"strategy": {"name": "pfedlora", "personal_steps": 2, "shared_steps": 5}}).strategy
    hook = PFedLoRAClient(options, torch.nn.Linear(1, 1), LAYOUT)
    names = [A0, B0, A1, B1, H]
    assert hook.phases(plan, names) == [([H], 2), ([A0, B0, A1, B1], 5)]
    assert hook.phases(Plan((0,), personal=("head",), train_head=False), [A0, B0]) == [([A0, B0], 5)]


def resumable(tiny_config, name: str, rounds: int):  # noqa: ANN001, ANN201
    tree = tiny_config.model_dump(mode="json")
    tree["output"]["plot"] = False
    tree["federation"]["rounds"] = rounds
    tree["checkpoint"] = {**tree.get("checkpoint", {}), "every": 1}
    return method_config(tree, name)


def stored(run_dir) -> dict[tuple[str, str], dict[str, torch.Tensor]]:  # noqa: ANN001
    root = run_dir / CLIENTS_DIR
    return {(p.parent.name, p.name): load_file(str(p)) for p in sorted(root.glob("*/round-*.safetensors"))}


def test_a_resumed_personalised_run_equals_an_uninterrupted_one(tiny_config, tmp_path):
    """Each method runs 2 rounds, then a crash is faked after round 3's clients wrote their state (garbage, for
    every client) but before its checkpoint; resumed to 4 rounds it must equal a 4-round run: the store is used as
    of round 2, the crashed round's versions are discarded. The kept state differs between clients (personal)."""
    for name in ("fedsa-lora", "pfedlora"):
        run_dir, reference = tmp_path / name / "run", tmp_path / name / "reference"
        ENGINES.get("local")().run(resumable(tiny_config, name, 2), run_dir, show_progress=False)
        store = ClientStore(run_dir / CLIENTS_DIR)
        for client in range(tiny_config.federation.num_clients):
            own = store.load(client, 3)
            if own is not None:
                store.save(client, 3, {k: torch.full_like(v, 7.0) for k, v in own.items()})
        summary = ENGINES.get("local")().run(resumable(tiny_config, name, 4), run_dir, show_progress=False, resume=True)
        assert summary["resumed_from"] == 2, name
        ENGINES.get("local")().run(resumable(tiny_config, name, 4), reference, show_progress=False)
        got, want = stored(run_dir), stored(reference)
        assert got.keys() == want.keys() and got, name
        assert all(torch.equal(got[k][n], want[k][n]) for k in got for n in got[k]), f"{name}: client state differs"
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        expected = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
        assert [(r["round"], r["accuracy"], r["train_loss"]) for r in lines] == [
            (r["round"], r["accuracy"], r["train_loss"]) for r in expected
        ], name
        last = {c: max(store.versions(int(c))) for c, _ in got}
        firsts = [got[(c, f"round-{k}.safetensors")] for c, k in sorted(last.items())]
        assert not all(torch.equal(next(iter(firsts[0].values())), next(iter(f.values()))) for f in firsts[1:])


def test_a_client_trains_its_kept_part_from_its_own_last_version(tiny_config, tmp_path):
    """FedSA-LoRA on the trainer: round 1 trains B from the global (zero) B and keeps it; round 2, at learning rate
    0 (nothing moves), starts from that kept B -- so it saves it unchanged -- and sends A and the head only."""
    from fedhello.models.adapter import extract_state
    from fedhello.server.federation import build_federation
    from fedhello.training import LocalTrainer

    config = method_config(tiny_config.model_dump(mode="json"), "fedsa-lora")
    federation = build_federation(config)
    trainer = LocalTrainer(federation.model, federation.task, federation.layout, config.train)
    state = {n: t.clone() for n, t in extract_state(federation.model, list(federation.layout)).items()}
    plan, store, data = Plan(tuple(range(4)), personal=("B",)), ClientStore(tmp_path), federation.client_data(0)
    first = trainer.train(0, plan, state, data, seed=1, round_num=1, store=store)
    kept = store.load(0, 2)
    assert kept and all(".lora_B." in n for n in kept) and any(t.abs().sum() > 0 for t in kept.values())
    assert not any(".lora_B." in n for n in first.tensors), "B is never sent"
    assert all(torch.count_nonzero(state[n]) == 0 for n in kept), "the global B stays zero"
    second = trainer.train(0, plan, state, data, seed=2, lr=0.0, round_num=2, store=store)
    again = store.load(0, 3)
    assert all(torch.equal(again[n], kept[n]) for n in kept), "round 2 started from the client's own B"
    assert set(second.tensors) == set(first.tensors)
