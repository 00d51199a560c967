"""Every random stream of a run derives from the seed here, so a round's decisions never depend on what
ran before it (and a resumed run continues bitwise).

Server decisions of round r draw from `round_rng(seed, r, STREAM, ...)`, one independent stream per kind of
decision; a client's local training in round r is seeded with `client_seed(seed, r, client)`; the tier of
every client comes from `tier_rng(seed)`.
"""

from __future__ import annotations

import numpy as np

SAMPLING, ALLOCATION, DROPOUT = 0, 1, 2  # per-round streams: which clients, which plans, who fails to reply
ATTACK = 4  # per-round stream, split per client: a simulated hostile client's noise (`attack.kind: random`)
_EVAL_SUBSET = 3  # the fixed test subset of intermediate evaluations (`federation.eval_subset`), drawn once
_TIERS = 7
_HOSTILE = 9  # which clients are hostile (`attack.hostile`), drawn once for the whole run


def round_rng(seed: int, round_num: int, stream: int, *more: int) -> np.random.Generator:
    """The generator of one kind of decision (`stream`) in one round; `more` splits it further (e.g. per
    attempt and client, so one client's draw does not depend on who else was sampled)."""
    return np.random.default_rng([seed, round_num, stream, *more])


def tier_rng(seed: int) -> np.random.Generator:
    """The generator that deals clients to tiers."""
    return np.random.default_rng([seed, _TIERS])


def hostile_rng(seed: int) -> np.random.Generator:
    """The generator that picks the simulated hostile clients of a run."""
    return np.random.default_rng([seed, _HOSTILE])


def eval_subset_rng(seed: int) -> np.random.Generator:
    """The generator that picks the fixed test subset of intermediate evaluations."""
    return np.random.default_rng([seed, _EVAL_SUBSET])


def client_seed(seed: int, round_num: int, client_id: int) -> int:
    """A deterministic seed for one client's training in one round."""
    return int(np.random.SeedSequence([seed, round_num, client_id]).generate_state(1)[0])
