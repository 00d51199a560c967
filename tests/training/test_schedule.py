"""The learning rate across rounds."""

import pytest

from fedhello.config import TrainConfig
from fedhello.training.schedule import round_lr


def test_constant_is_the_configured_rate():
    assert [round_lr(TrainConfig(lr=0.01), r, 5) for r in range(1, 6)] == [0.01] * 5


def test_warmup_then_cosine_to_the_floor():
    config = TrainConfig(lr=1.0, lr_schedule="cosine", warmup_rounds=2, min_lr_ratio=0.1)
    rates = [round_lr(config, r, 8) for r in range(1, 9)]
    assert rates[:2] == pytest.approx([1 / 3, 2 / 3])
    assert rates[2] == pytest.approx(1.0) and rates[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(rates[2:], rates[3:], strict=False))  # strictly decreasing after warm-up
