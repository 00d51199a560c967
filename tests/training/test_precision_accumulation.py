"""Gradient accumulation (effective batch), mixed-precision autocast and gradient checkpointing options."""

import pytest
import torch

from fedhello.config import TrainConfig
from fedhello.errors import ConfigError
from fedhello.plan import Plan
from fedhello.server import build_federation
from fedhello.training import LocalTrainer
from fedhello.training.trainer import autocast


def _train(config, train_overrides):
    config = config.model_copy(deep=True)
    config.lora.dropout = 0.0
    for key, value in train_overrides.items():
        setattr(config.train, key, value)
    federation = build_federation(config)
    for module in federation.model.modules():  # no dropout: batch splits must not change the random masks
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    trainer = LocalTrainer(federation.model, federation.task, federation.layout, config.train)
    state = {n: p.detach().clone() for n, p in federation.model.named_parameters() if n in federation.layout}
    data = federation.train.select(range(16))
    return trainer.train(0, Plan(layers=(0, 1, 2, 3)), state, data, seed=4)


def test_accumulated_micro_batches_equal_one_big_batch(tiny_config):
    big = _train(tiny_config, {"batch_size": 16})
    split = _train(tiny_config, {"batch_size": 4, "effective_batch_size": 16})
    assert split.metrics["steps"] == big.metrics["steps"] == 1
    for name, tensor in big.tensors.items():
        assert torch.allclose(tensor, split.tensors[name], atol=1e-5), name
    plain = _train(tiny_config, {"batch_size": 4})
    assert plain.metrics["steps"] == 4
    assert any(not torch.allclose(t, plain.tensors[n], atol=1e-5) for n, t in big.tensors.items())


def step_gradients(federation, config, state, data, monkeypatch) -> list[dict[str, torch.Tensor]]:
    """The gradients every optimizer step of one client's training from `state` sees (recorded just before
    the step)."""
    seen: list[dict[str, torch.Tensor]] = []
    params = dict(federation.model.named_parameters())

    class Recording(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            seen.append({n: p.grad.detach().clone() for n, p in params.items() if p.grad is not None})
            return super().step(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", Recording)
    LocalTrainer(federation.model, federation.task, federation.layout, config.train).train(
        0, Plan(layers=(0, 1, 2, 3)), state, data, seed=4
    )
    return seen


def test_uneven_micro_batches_give_the_full_batch_gradient(tiny_config, monkeypatch):
    """14 samples in micro-batches of 4, 4, 4 and 2: each sample must weigh 1/14, as in one batch of 14
    (averaging the four micro-batch means would give the last two samples 1/8 each)."""
    config = tiny_config.model_copy(deep=True)
    config.lora.dropout = 0.0
    federation = build_federation(config)
    for module in federation.model.modules():  # no dropout: batch splits must not change the random masks
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    data = federation.train.select(range(14))
    state = {n: p.detach().clone() for n, p in federation.model.named_parameters() if n in federation.layout}
    config.train.batch_size = 14
    (full,) = step_gradients(federation, config, state, data, monkeypatch)
    config.train.batch_size, config.train.grad_accum = 4, 4
    (accumulated,) = step_gradients(federation, config, state, data, monkeypatch)
    assert set(full) == set(accumulated) and full
    for name, grad in full.items():
        assert torch.allclose(accumulated[name], grad, rtol=1e-4, atol=1e-7), name


def test_effective_batch_must_be_a_multiple():
    assert TrainConfig(batch_size=8, effective_batch_size=32).grad_accum == 4
    with pytest.raises(ValueError, match="multiple"):
        TrainConfig(batch_size=8, effective_batch_size=30)


def test_bf16_autocast_and_checkpointing_train_on_cpu(tiny_config):
    update = _train(tiny_config, {"precision": "bf16", "gradient_checkpointing": True})
    assert update.metrics["steps"] == 2 and torch.isfinite(torch.tensor(update.metrics["train_loss"]))
    assert all(t.dtype == torch.float32 for t in update.tensors.values()), "weights stay fp32"


def test_fp16_needs_cuda():
    with pytest.raises(ConfigError, match="train.precision"):
        autocast(torch.device("cpu"), "fp16")
