"""ARD-LoRA: rank gates between A and B (B diag(g) A), the l1 and TV terms, folding the gates into B and pruning
the sub-threshold components before upload, and the SVD aggregation of the clients' mixed effective ranks."""

from __future__ import annotations

import pytest
import torch

from fedhello.config import ReliabilityConfig, strategy_options
from fedhello.methods import method_config
from fedhello.methods.ard_lora.client import fold_and_prune, gated_output, l1_term, tv_term
from fedhello.methods.flexlora.aggregator import flexlora_aggregate
from fedhello.models.ranks import lora_factor, pad, partner_name, zero_beyond_rank
from fedhello.plan import ClientUpdate, Plan
from fedhello.server import build_federation
from fedhello.server.validation import UpdateValidator
from fedhello.training import LocalTrainer

A = "m.layer.0.q.lora_A.default.weight"
B = partner_name(A)
R, IN, OUT = 4, 6, 5


def hand_pair(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        A: torch.randn(R, IN, generator=g, dtype=torch.float64),
        B: torch.randn(OUT, R, generator=g, dtype=torch.float64),
    }


def test_gated_output_scales_the_first_components_only():
    out = torch.ones(2, 3, R)
    gated = gated_output(out, torch.tensor([0.5, 2.0]))
    assert torch.equal(gated[..., :2], torch.tensor([0.5, 2.0]).expand(2, 3, 2))
    assert torch.equal(gated[..., 2:], out[..., 2:]), "components beyond the client's rank pass unchanged"


def test_l1_and_tv_terms_values_and_gradients():
    g1 = torch.tensor([1.0, -0.5, 0.25], requires_grad=True)
    g2 = torch.tensor([2.0], requires_grad=True)
    previous = [torch.tensor([0.5, -0.5, 1.0]), torch.tensor([2.5])]
    l1 = l1_term([g1, g2])
    assert l1.item() == pytest.approx(1.0 + 0.5 + 0.25 + 2.0)
    tv = tv_term([g1, g2], previous)
    assert tv.item() == pytest.approx(0.5 + 0.0 + 0.75 + 0.5)
    (3.0 * l1 + 2.0 * tv).backward()
    # d|g|/dg = sign(g); d|g - p|/dg = sign(g - p), 0 where g == p (a gate that did not move is not pushed)
    assert torch.equal(g1.grad, 3.0 * torch.tensor([1.0, -1.0, 1.0]) + 2.0 * torch.tensor([1.0, 0.0, -1.0]))
    assert torch.equal(g2.grad, torch.tensor([3.0 - 2.0]))


def test_fold_and_prune_drops_exactly_the_sub_threshold_components():
    tensors = hand_pair(0)
    a, b = tensors[A].clone(), tensors[B].clone()
    gate = torch.tensor([0.9, 0.2, 0.7, 0.4])
    assert fold_and_prune(tensors, {A: gate}, threshold=0.5) == {A: (4, 2)}
    keep = [0, 2]  # components 1 and 3 are below 0.5: not trailing, so the kept ones are compacted in order
    assert torch.equal(tensors[A], a[keep])
    assert torch.allclose(tensors[B], b[:, keep] * gate[keep].double())
    folded = b @ torch.diag(gate.double()) @ a
    dropped = b[:, [1, 3]] @ torch.diag(gate[[1, 3]].double()) @ a[[1, 3]]
    assert torch.allclose(tensors[B] @ tensors[A], folded - dropped, atol=1e-12)


def test_fold_without_threshold_is_exactly_the_gated_update_and_a_rank_keeps_its_best_component():
    tensors = hand_pair(1)
    a, b = tensors[A].clone(), tensors[B].clone()
    gate = torch.tensor([0.3, 1.5, 0.8])  # a rank-3 client of an r_max 4 adapter
    assert fold_and_prune(tensors, {A: gate}, threshold=0.0) == {A: (3, 3)}
    assert tensors[A].shape == (3, IN) and tensors[B].shape == (OUT, 3), "beyond the client's rank: not sent"
    assert torch.allclose(tensors[B] @ tensors[A], b[:, :3] @ torch.diag(gate.double()) @ a[:3], atol=1e-12)
    low = hand_pair(2)
    assert fold_and_prune(low, {A: torch.tensor([0.1, 0.3, 0.2, 0.05])}, threshold=0.5) == {A: (4, 1)}
    assert torch.equal(low[A], hand_pair(2)[A][[1]]), "every gate under the threshold: the largest one stays"
    assert fold_and_prune({A: torch.ones(R, IN)}, {A: torch.ones(R)}, 0.5) == {}, "one factor only: left alone"


def test_mixed_effective_ranks_aggregate_to_the_svd_of_the_weighted_sum_of_products():
    """Two clients keep different, non-trailing components; the server's SVD sees only their products, so the
    compaction does not matter, and the validator accepts the lower-rank pairs."""
    c1, c2 = hand_pair(3), hand_pair(4)
    g1, g2 = torch.tensor([0.1, 0.9, 0.6, 0.2]), torch.tensor([0.8, 0.7, 0.05, 0.6])
    p1 = c1[B] @ torch.diag(g1.double() * (g1 >= 0.5)) @ c1[A]
    p2 = c2[B][:, :3] @ torch.diag(g2[:3].double() * (g2[:3] >= 0.5)) @ c2[A][:3]
    assert fold_and_prune(c1, {A: g1}, 0.5) == {A: (4, 2)}
    assert fold_and_prune(c2, {A: g2[:3]}, 0.5) == {A: (3, 2)}  # a rank-3 client
    head = "m.classifier.weight"
    global_state = {A: torch.zeros(R, IN, dtype=torch.float64), B: torch.zeros(OUT, R, dtype=torch.float64),
                    head: torch.zeros(2, dtype=torch.float64)}  # fmt: skip
    ups = [
        ClientUpdate(1, Plan((0,), ranks={0: 4}), {**c1, head: torch.ones(2, dtype=torch.float64)}, 10),
        ClientUpdate(2, Plan((0,), ranks={0: 3}), {**c2, head: torch.ones(2, dtype=torch.float64)}, 30),
    ]
    out = flexlora_aggregate(global_state, ups, "samples")
    assert torch.allclose(out[B] @ out[A], 0.25 * p1 + 0.75 * p2, atol=1e-10), "total rank 4 <= r_max: exact"
    layout = {A: 0, B: 0, head: -1}
    validator = UpdateValidator(layout, ReliabilityConfig(), pruned_ranks=True)
    for update in ups:
        assert validator.check_one(update, update.plan, global_state) is None


def test_the_preset_sends_lower_ranks_to_an_svd_aggregator(tiny_config):
    config = method_config(tiny_config.model_dump(mode="json"), "ard-lora")
    assert config.strategy.name == "ard_lora" and config.aggregation.name == "flexlora"
    assert config.strategy.sends_lower_ranks, "the server accepts effective-rank adapters"
    assert not strategy_options({"name": "ard_lora", "gate_threshold": 0}).sends_lower_ranks


@pytest.fixture
def federation(tiny_config):
    fed = build_federation(tiny_config)
    for module in fed.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B non-zero, so the gates show in the forward pass
        for name, param in fed.model.named_parameters():
            if lora_factor(name):
                param.copy_(torch.randn(param.shape, generator=g) * 0.3)
    return fed


def logits(model, batch):  # noqa: ANN001, ANN201
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def test_the_gated_model_computes_b_diag_g_a_and_folding_keeps_it(federation, tiny_config):
    fed = federation
    batch = fed.task.collate([fed.train[i] for i in range(8)])
    plan = Plan(tuple(range(fed.num_layers)), ranks=dict.fromkeys(range(fed.num_layers), 3))
    zero_beyond_rank(fed.model, fed.layout, plan.ranks)  # as the trainer does: a rank-3 client
    plain = logits(fed.model, batch)
    options = strategy_options({"name": "ard_lora"})
    trainer = LocalTrainer(fed.model, fed.task, fed.layout, tiny_config.train, strategy=options)
    hook = trainer.hook
    hook.before_training(plan)
    assert torch.allclose(logits(fed.model, batch), plain, atol=1e-6), "gates start at 1: the global model"
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for gate in hook._gates.values():
            gate.copy_(torch.rand(gate.shape, generator=g) * 2)
    gated = logits(fed.model, batch)
    assert not torch.allclose(gated, plain, atol=1e-4)
    hook.after_training(plan)
    assert torch.allclose(logits(fed.model, batch), plain, atol=1e-6), "the hooks are removed"
    params = dict(fed.model.named_parameters())
    tensors = {n: params[n].detach().clone() for n in fed.layout}
    gates = {n: gate.detach().clone() for n, gate in hook._gates.items()}
    assert set(gates) == {n for n in fed.layout if lora_factor(n) == "A"} and all(len(v) == 3 for v in gates.values())
    metrics = hook.finish_update(plan, tensors)  # threshold 0.5: components with a gate under it are dropped
    assert metrics["mean_rank"] == pytest.approx(sum(int((v >= 0.5).sum()) or 1 for v in gates.values()) / len(gates))
    # the folded, unpruned adapter is exactly the gated model: B[:, :3] diag(g) A[:3]
    folded = {n: params[n].detach().clone() for n in fed.layout}
    fold_and_prune(folded, gates, threshold=0.0)
    with torch.no_grad():
        for name, tensor in folded.items():
            params[name].copy_(pad(name, tensor, params[name].shape))
    assert torch.allclose(logits(fed.model, batch), gated, atol=1e-5)


def test_training_moves_the_gates_and_sends_at_most_the_tier_rank(federation, tiny_config):
    fed = federation
    state = {n: p.detach().clone() for n, p in fed.model.named_parameters() if n in fed.layout}
    plan = Plan(tuple(range(fed.num_layers)), ranks=dict.fromkeys(range(fed.num_layers), 3))
    data = fed.client_data(0)
    strong = strategy_options({"name": "ard_lora", "l1": 10.0, "gate_lr": 0.3})  # l1 dominates: gates collapse
    update = LocalTrainer(fed.model, fed.task, fed.layout, tiny_config.train, strategy=strong).train(
        0, plan, state, data, 5
    )
    assert update.metrics["mean_gate"] < 0.5 and update.metrics["mean_rank"] == 1.0
    assert all(t.shape[0] == 1 for n, t in update.tensors.items() if lora_factor(n) == "A")
    assert not fed.model._forward_hooks and all(not m._forward_hooks for m in fed.model.modules()), "hooks removed"
    off = strategy_options({"name": "ard_lora", "l1": 0.0, "tv": 0.0, "gate_threshold": 0.0})
    kept = LocalTrainer(fed.model, fed.task, fed.layout, tiny_config.train, strategy=off).train(0, plan, state, data, 5)
    assert kept.metrics["mean_rank"] == 3.0 and kept.metrics["mean_gate"] != 1.0, "the task loss moves the gates"
    assert all(t.shape[0] == 3 for n, t in kept.tensors.items() if lora_factor(n) == "A")
