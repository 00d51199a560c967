"""Each client's local test split (`federation.local_test`): a seeded share of its own data it never trains on."""

from __future__ import annotations

import numpy as np
from datasets import Dataset

from fedhello.config import FederationConfig

LOCAL_TEST_SEED = 0x10CA1  # keeps the split's random stream apart from every other use of the run seed


def split_local_test(data: Dataset, share: float, seed: int, client_id: int) -> tuple[Dataset, Dataset | None]:
    """(training part, local test part) of one client's data: round(share * n) samples, at least 1 and leaving at
    least 1 to train on, drawn by a generator seeded with (run seed, client id), so every engine and every node
    holding that client's data draws the same split. `share` 0: all of it trains, no local test split."""
    n = len(data)
    if share <= 0 or n < 2:
        return data, None
    size = min(n - 1, max(1, round(share * n)))
    order = np.random.default_rng([LOCAL_TEST_SEED, seed, client_id]).permutation(n)
    test = sorted(int(i) for i in order[:size])
    train = sorted(int(i) for i in order[size:])
    return data.select(train), data.select(test)


def local_test_due(federation: FederationConfig, round_num: int) -> bool:
    """Whether the clients of `round_num` score their local test splits: personalised evaluation is on and the round
    is an evaluation round (every `federation.eval_every`-th and the last). Clients work it out from the config, so
    nothing extra travels."""
    share, every = federation.local_test, federation.eval_every
    return share > 0 and (round_num % every == 0 or round_num == federation.rounds)
