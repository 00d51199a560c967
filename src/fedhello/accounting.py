"""Privacy accounting (`privacy.mode`; in the bottom layer so that loading a config can refuse an overspent budget)
with Google's `dp-accounting` (the RDP accountant): kept by the team behind TensorFlow Privacy,
it has the accountant for the sampling fedhello does -- a fixed number of clients drawn without replacement each
round (`SampledWithoutReplacementDpEvent`, Wang, Balle & Kasiviswanathan 2019) -- which Opacus' accountants lack
(they assume Poisson sampling). Chosen over a formula of our own so that the epsilon is the library's.

The neighbouring relation is replace-one (a client's data replaced by anyone else's; the federation's size is public),
the relation that fixed-size sampling is analysed under. Replacing one client's clipped change (norm <= C) moves a
tensor sum by at most 2C, so the Gaussian mechanism whose noise is z*C per entry has noise multiplier z/2 relative
to that sensitivity.
"""

from __future__ import annotations

import math

import dp_accounting
from dp_accounting.rdp import RdpAccountant

REPLACE_ONE = dp_accounting.NeighboringRelation.REPLACE_ONE


def round_event(noise_multiplier: float, num_clients: int, per_round: int) -> dp_accounting.DpEvent:
    """One round: `per_round` of `num_clients` clients drawn without replacement, their clipped changes summed and
    noised with standard deviation `noise_multiplier` x the clip norm."""
    if noise_multiplier <= 0:
        return dp_accounting.NonPrivateDpEvent()
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier / 2)  # sensitivity 2C under replace-one
    return dp_accounting.SampledWithoutReplacementDpEvent(num_clients, per_round, gaussian)


def epsilon_after(rounds: int, noise_multiplier: float, num_clients: int, per_round: int, delta: float) -> float:
    """The epsilon spent after `rounds` released rounds, at `delta` (0 for no round, inf without noise)."""
    if rounds <= 0:
        return 0.0
    accountant = RdpAccountant(neighboring_relation=REPLACE_ONE)
    accountant.compose(round_event(noise_multiplier, num_clients, per_round), rounds)
    return float(accountant.get_epsilon(delta))


def max_rounds(max_epsilon: float, noise_multiplier: float, num_clients: int, per_round: int, delta: float) -> int:
    """The most rounds whose epsilon stays within `max_epsilon` (epsilon grows with the rounds: bisection)."""
    if epsilon_after(1, noise_multiplier, num_clients, per_round, delta) > max_epsilon:
        return 0
    low, high = 1, 2
    while epsilon_after(high, noise_multiplier, num_clients, per_round, delta) <= max_epsilon and high < 1 << 20:
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if epsilon_after(middle, noise_multiplier, num_clients, per_round, delta) <= max_epsilon:
            low = middle
        else:
            high = middle
    return low


def noise_for(max_epsilon: float, rounds: int, num_clients: int, per_round: int, delta: float) -> float:
    """The smallest noise multiplier (to 3 significant digits, rounded up) whose `rounds` stay within `max_epsilon`."""
    low, high = 0.0, 1.0
    while epsilon_after(rounds, high, num_clients, per_round, delta) > max_epsilon:
        low, high = high, high * 2
    for _ in range(40):
        middle = (low + high) / 2
        if epsilon_after(rounds, middle, num_clients, per_round, delta) > max_epsilon:
            low = middle
        else:
            high = middle
    digits = 2 - math.floor(math.log10(high))
    return math.ceil(high * 10**digits) / 10**digits
