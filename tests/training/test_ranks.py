"""HetLoRA's client side: per-rank scaling (a rank-r client is exactly a rank-r adapter with scale alpha / r)
and local rank self-pruning (deterministic; a pruned pair is uploaded as the rank-k adapter it now is)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from fedhello.allocation.rank import budget_rank
from fedhello.config import strategy_options
from fedhello.engines import ENGINES
from fedhello.methods import method_config, method_overrides
from fedhello.methods.hetlora.client import PerRankScaling, self_prune
from fedhello.models.build import apply_lora
from fedhello.models.layers import trainable_layout
from fedhello.models.ranks import lora_factor, partner_name, zero_beyond_rank
from fedhello.plan import Plan
from fedhello.server import build_federation
from fedhello.training import LocalTrainer

RANK = 2  # the client's rank; the tiny adapter's r_max is 4 (alpha 8)


def no_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


@pytest.fixture
def federation(tiny_config):
    fed = build_federation(tiny_config)
    no_dropout(fed.model)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained-looking adapter: B non-zero, so scales show in the forward pass
        for name, param in fed.model.named_parameters():
            if lora_factor(name):
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    return fed


def rank_r_model(tiny_config, rank: int) -> torch.nn.Module:
    """An independent peft model whose adapter has rank `rank` (so peft scales it by alpha / rank)."""
    config = tiny_config.model_copy(deep=True)
    config.lora.r = rank
    base = AutoModelForSequenceClassification.from_pretrained(config.model.name_or_path, num_labels=4)
    model = apply_lora(base, config)
    no_dropout(model)
    return model


def as_rank_r(state: dict[str, torch.Tensor], rank: int, r_max: int) -> dict[str, torch.Tensor]:
    """The global (alpha / r_max) factors as a rank-r adapter with scale alpha / r: A[:r], B[:, :r] r / r_max."""
    out = {}
    for name, tensor in state.items():
        factor = lora_factor(name)
        out[name] = tensor[:rank] if factor == "A" else tensor[:, :rank] * rank / r_max if factor == "B" else tensor
    return out


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def test_per_rank_client_is_exactly_a_rank_r_adapter_with_scale_alpha_over_r(federation, tiny_config):
    fed = federation
    batch = fed.task.collate([fed.train[i] for i in range(8)])
    ranks = dict.fromkeys(range(fed.num_layers), RANK)
    zero_beyond_rank(fed.model, fed.layout, ranks)
    state = {n: p.detach().clone() for n, p in fed.model.named_parameters() if n in fed.layout}
    global_view = logits(fed.model, batch)

    scaling = PerRankScaling(fed.model, fed.layout, ranks)
    scaling.enter()
    modules = [m for m, _, _ in scaling.modules.values()]
    assert modules and all(m.scaling["default"] == pytest.approx(8 / RANK) for m in modules)
    client_view = logits(fed.model, batch)
    reference = rank_r_model(tiny_config, RANK)
    reference.load_state_dict(as_rank_r(state, RANK, 4), strict=False)
    assert torch.allclose(client_view, logits(reference, batch), atol=1e-5), "not a rank-r adapter at alpha / r"
    assert torch.allclose(client_view, global_view, atol=1e-5), "the client must start from the global model"

    scaling.exit()
    assert all(m.scaling["default"] == pytest.approx(8 / 4) for m in modules)
    params = dict(fed.model.named_parameters())
    assert all(torch.allclose(params[n].detach(), t) for n, t in state.items())


def test_per_rank_training_moves_as_a_rank_r_adapter_and_uploads_in_server_units(federation, tiny_config):
    fed = federation
    data = fed.client_data(0)
    state = {n: p.detach().clone() for n, p in fed.model.named_parameters() if n in fed.layout}
    per_rank = strategy_options({"name": "hetlora", "rank_scaling": "per_rank", "self_prune_threshold": 0})
    plan = Plan(tuple(range(fed.num_layers)), ranks=dict.fromkeys(range(fed.num_layers), RANK))
    trainer = LocalTrainer(fed.model, fed.task, fed.layout, tiny_config.train, strategy=per_rank)
    update = trainer.train(0, plan, state, data, 5)

    reference = rank_r_model(tiny_config, RANK)
    layout = trainable_layout(reference.named_parameters())
    expected = LocalTrainer(reference, fed.task, layout, tiny_config.train).train(
        0, Plan(tuple(range(fed.num_layers))), as_rank_r(state, RANK, 4), data, 5
    )
    assert set(update.tensors) == set(expected.tensors)
    for name, tensor in update.tensors.items():
        want = expected.tensors[name] * (4 / RANK if lora_factor(name) == "B" else 1.0)
        assert torch.allclose(tensor, want, rtol=1e-4, atol=1e-6), name
    fixed = LocalTrainer(fed.model, fed.task, fed.layout, tiny_config.train).train(0, plan, state, data, 5)
    assert any(not torch.allclose(fixed.tensors[n], t, atol=1e-6) for n, t in update.tensors.items())


A = "m.layer.0.q.lora_A.default.weight"


def pair(tail_scale: float) -> dict[str, torch.Tensor]:
    """A rank-4 pair whose components 3 (the top one) has `tail_scale` times the size of the others."""
    a, b = torch.eye(4, 6), torch.eye(5, 4)
    a[3] *= tail_scale
    return {A: a, partner_name(A): b}


def test_self_pruning_drops_weak_top_components_only():
    weak = pair(0.01)
    assert self_prune(weak, {A: 4}, threshold=0.1, keep_ratio=0.75) == {A: 3}
    assert weak[A].shape == (3, 6) and weak[partner_name(A)].shape == (5, 3), "a rank-3 pair now"
    assert torch.equal(weak[A], torch.eye(4, 6)[:3]), "kept components are untouched"
    strong = pair(1.0)
    assert self_prune(strong, {A: 4}, threshold=0.1, keep_ratio=0.75) == {A: 4}
    assert torch.equal(strong[A], torch.eye(4, 6))
    blank = {A: torch.zeros(4, 6), partner_name(A): torch.zeros(5, 4)}
    assert self_prune(blank, {A: 4}, 0.1, 0.75) == {A: 4}, "nothing learned: nothing to compare, no pruning"
    assert self_prune(pair(0.01), {A: 1}, 0.1, 0.75) == {A: 1}, "rank 1 is never pruned"
    assert self_prune({A: torch.eye(4, 6)}, {A: 4}, 0.1, 0.75) == {}, "one factor only (FFA-LoRA): left alone"


def test_hetlora_preset_is_the_published_method():
    overrides = dict(item.split("=", 1) for item in method_overrides("hetlora"))
    assert json.loads(overrides["strategy.name"]) == "hetlora"
    assert json.loads(overrides["strategy.rank_scaling"]) == "per_rank"
    assert json.loads(overrides["strategy.self_prune_threshold"]) > 0


def test_self_pruned_uploads_pass_validation_and_report_their_rank(tiny_config, tmp_path):
    tree = tiny_config.model_dump(mode="json")
    config = method_config(tree, "hetlora")
    config.strategy.self_prune_threshold = 1e6  # every pair with anything learned drops its top components
    config.federation.rounds = 1
    config.output.save_adapter = config.output.plot = False
    summary = ENGINES.get("local")().run(config, tmp_path / "run", show_progress=False)
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["rejected_updates"] == 0 and not record["rejected"]
    assert record["clients"]
    for client in record["clients"]:
        rank = budget_rank(config.lora.r, config.tiers[client["tier"]].layers, 4)  # the plan's rank
        if rank == 1:  # nothing to prune below rank 1
            assert client["pruned_pairs"] == 0 and client["mean_rank"] == 1
        else:
            assert client["pruned_pairs"] > 0 and client["mean_rank"] < rank, client
    assert any(config.tiers[c["tier"]].layers > 1 for c in record["clients"]), "no client could prune"


def test_the_upload_is_the_pruned_adapter(tiny_config):
    """The metrics say what was pruned; the uploaded tensors must be it: every pruned pair arrives as a rank-k
    adapter (fewer bytes), its components those of the trained factors, and the reported ranks are the sent
    ones."""
    config = method_config(tiny_config.model_dump(mode="json"), "hetlora")
    config.strategy.self_prune_threshold = 1e6  # every pair with anything learned drops its top components
    fed = build_federation(config)
    state = {n: p.detach().clone() for n, p in fed.model.named_parameters() if n in fed.layout}
    plan = Plan(tuple(range(fed.num_layers)), ranks=dict.fromkeys(range(fed.num_layers), 4))
    data = fed.client_data(0)
    trainer = LocalTrainer(fed.model, fed.task, fed.layout, config.train)
    update = trainer.train(0, plan, state, data, seed=5)

    unpruned = config.strategy.model_copy(update={"self_prune_threshold": 0.0})
    reference = LocalTrainer(fed.model, fed.task, fed.layout, config.train, strategy=unpruned).train(
        0, plan, state, data, seed=5
    )
    ranks = {name: update.tensors[name].shape[0] for name in update.tensors if lora_factor(name) == "A"}
    assert update.metrics["pruned_pairs"] == sum(rank < 4 for rank in ranks.values()) > 0
    assert update.metrics["mean_rank"] == sum(ranks.values()) / len(ranks)
    for a_name, rank in ranks.items():
        b_name = partner_name(a_name)
        assert update.tensors[b_name].shape[1] == rank, "both factors of a pair at the kept rank"
        assert torch.equal(update.tensors[a_name], reference.tensors[a_name][:rank])
        assert torch.equal(update.tensors[b_name], reference.tensors[b_name][:, :rank])
    assert update.num_bytes < reference.num_bytes, "pruned components are not sent"
