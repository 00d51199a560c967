"""The learning rate of a round: the server's schedule across rounds, applied by every client of that round.

A client trains for one local epoch per round, so a schedule inside one client's training would restart
every round; the schedule that matters in federated fine-tuning is across rounds. Cosine decay lets late
rounds make small moves, so the final global model is not the accident of one large, drifting step.
"""

from __future__ import annotations

import math

from fedhello.config import TrainConfig


def round_lr(train: TrainConfig, round_num: int, rounds: int) -> float:
    """Learning rate of round `round_num` (1-based) of `rounds`: linear warm-up over `warmup_rounds`, then
    `lr` (constant) or a cosine from `lr` at the first post-warm-up round to `min_lr_ratio * lr` at the last."""
    warmup = min(train.warmup_rounds, max(rounds - 1, 0))
    if round_num <= warmup:
        return train.lr * round_num / (warmup + 1)
    if train.lr_schedule == "constant":
        return train.lr
    span = rounds - warmup - 1
    progress = 0.0 if span <= 0 else (round_num - warmup - 1) / span
    floor = train.min_lr_ratio * train.lr
    return floor + (train.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
