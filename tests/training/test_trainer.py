import torch

from fedhello.models.adapter import freeze_for_plan
from fedhello.models.layers import HEAD, keys_for_layers
from fedhello.plan import Plan
from fedhello.server import Coordinator, build_federation
from fedhello.training import LocalTrainer


def test_frozen_layers_get_no_grad_no_optimizer_state_and_are_not_uploaded(tiny_config, monkeypatch):
    fed = build_federation(tiny_config)
    coordinator = Coordinator(fed)
    created = []

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, params, **kwargs):
            super().__init__(params, **kwargs)
            created.append(self)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    trainer = LocalTrainer(fed.model, fed.task, fed.layout, tiny_config.train)
    plan = Plan((1, 3))
    grads_seen: dict[str, bool] = {}

    def spy(optimizer, args, kwargs):  # before each step: which parameters hold a gradient
        for name, p in fed.model.named_parameters():
            grads_seen[name] = grads_seen.get(name, False) or p.grad is not None

    monkeypatch.setattr(RecordingAdamW, "step", _with_pre_hook(RecordingAdamW.step, spy))
    update = trainer.train(0, plan, coordinator.global_state, fed.client_data(0), seed=1)

    trained = set(keys_for_layers(fed.layout, [1, 3], head=True))
    assert set(update.tensors) == trained
    assert {fed.layout[n] for n in update.tensors} == {1, 3, HEAD}
    assert {n for n, seen in grads_seen.items() if seen} == trained
    optimizer = created[-1]
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    params = dict(fed.model.named_parameters())
    assert optimized == {id(params[n]) for n in trained}
    assert {id(p) for p in optimizer.state} <= optimized and len(optimizer.state) == len(trained)
    assert update.num_bytes == sum(params[n].numel() * 4 for n in trained)
    # the trained tensors moved, the frozen ones did not
    for name in fed.layout:
        changed = not torch.equal(params[name].detach(), coordinator.global_state[name])
        assert changed == (name in trained), name


def _with_pre_hook(fn, hook):
    def wrapped(self, *args, **kwargs):
        hook(self, args, kwargs)
        return fn(self, *args, **kwargs)

    return wrapped


def test_freeze_for_plan_sets_requires_grad_exactly(tiny_config):
    fed = build_federation(tiny_config)
    names = freeze_for_plan(fed.model, fed.layout, Plan((0,), train_head=False))
    trainable = {n for n, p in fed.model.named_parameters() if p.requires_grad}
    assert trainable == set(names) == {n for n, i in fed.layout.items() if i == 0}


def test_training_is_seeded(tiny_config):
    fed = build_federation(tiny_config)
    coordinator = Coordinator(fed)
    trainer = LocalTrainer(fed.model, fed.task, fed.layout, tiny_config.train)
    a = trainer.train(0, Plan((0, 1)), coordinator.global_state, fed.client_data(0), seed=7)
    b = trainer.train(0, Plan((0, 1)), coordinator.global_state, fed.client_data(0), seed=7)
    c = trainer.train(0, Plan((0, 1)), coordinator.global_state, fed.client_data(0), seed=8)
    assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors)
    assert any(not torch.equal(a.tensors[k], c.tensors[k]) for k in a.tensors)


def test_load_state_refuses_a_shape_that_copy_would_broadcast(tiny_config):
    import pytest

    from fedhello.models.adapter import load_state

    fed = build_federation(tiny_config)
    name = next(n for n in fed.layout if ".lora_A." in n)
    row = dict(fed.model.named_parameters())[name].detach()[:1].clone()
    with pytest.raises(ValueError, match="shape"):
        load_state(fed.model, {name: row})


def test_update_reports_the_rms_gradient_norm_of_exactly_the_trained_layers(tiny_config):
    """Fed-pilot's local values: `grad_norm.<layer>` for the plan's layers, none for frozen ones, and equal
    to the RMS over steps of the layer's gradient norm (one step: that step's norm)."""
    config = tiny_config.model_copy(deep=True)
    config.train.max_steps = 1
    fed = build_federation(config)
    state = Coordinator(fed).global_state
    seen: dict[int, float] = {}

    def spy(optimizer, args, kwargs):  # noqa: ANN001, ANN202 - the gradient the one step applies
        params = dict(fed.model.named_parameters())
        for name, layer in fed.layout.items():
            if layer != HEAD and params[name].grad is not None:
                seen[layer] = seen.get(layer, 0.0) + float(params[name].grad.pow(2).sum())

    original = torch.optim.AdamW.step
    torch.optim.AdamW.step = _with_pre_hook(original, spy)
    try:
        update = LocalTrainer(fed.model, fed.task, fed.layout, config.train).train(
            0, Plan((1, 3)), state, fed.client_data(0), seed=1
        )
    finally:
        torch.optim.AdamW.step = original
    norms = {k: v for k, v in update.metrics.items() if k.startswith("grad_norm.")}
    assert set(norms) == {"grad_norm.1", "grad_norm.3"}
    for layer in (1, 3):
        assert norms[f"grad_norm.{layer}"] > 0
        assert abs(norms[f"grad_norm.{layer}"] - seen[layer] ** 0.5) < 1e-6 * max(1.0, seen[layer] ** 0.5)


def test_fedprox_keeps_the_update_near_the_start_and_is_absent_at_zero(tiny_config, monkeypatch):
    """train.proximal_mu: a large mu keeps the trained tensors much nearer the global ones; mu = 0 never builds the
    term, so the update is bitwise the one without FedProx."""
    from fedhello.training import trainer as module

    tiny_config.train.max_steps = 6
    fed = build_federation(tiny_config)
    state = Coordinator(fed).global_state
    terms: list[float] = []

    def spy(params, anchors, mu):  # noqa: ANN001, ANN202
        term = real(params, anchors, mu)
        terms.append(float(term))
        return term

    real = module.proximal_term
    monkeypatch.setattr(module, "proximal_term", spy)

    def drift(mu: float) -> float:
        config = tiny_config.train.model_copy(update={"proximal_mu": mu})
        trainer = LocalTrainer(fed.model, fed.task, fed.layout, config)
        update = trainer.train(0, Plan((2, 3)), state, fed.client_data(0), seed=7)
        return sum(float((t - state[n]).pow(2).sum()) for n, t in update.tensors.items()) ** 0.5

    free = drift(0.0)
    assert terms == [], "mu = 0: no proximal term is built"
    held = drift(10.0)
    assert len(terms) == 6 and terms[0] == 0.0 < terms[1], "once per step, from the start of the round"
    assert held < 0.5 * free, (held, free)
