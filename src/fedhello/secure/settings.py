"""The protocol's parameters and its one error type."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedhello.errors import FedHelloError


class SecureAggregationError(FedHelloError):
    """A round of secure aggregation cannot finish (too few clients, a bad setting): one line with the fix."""


@dataclass(frozen=True)
class SecureSettings:
    """How a round of secure aggregation quantises and how many clients it needs.

    bits             the masked arithmetic is modulo 2^bits (8..62); the sum of n clients' changes is exact to
                     n quantisation steps, a step being clip_range / levels(n) (`levels`).
    clip_range       each change entry is clipped to [-clip_range, clip_range] before it is quantised.
    threshold        Shamir threshold t: a float in (0, 1] is a share of the round's clients (rounded up), an
                     int >= 2 a count; at least 2 either way. The round fails unless t clients answer the unmask
                     stage, and t colluding clients could unmask one of their peers.
    min_contributors a tensor's sum is released only over at least this many clients (a sum of one client is its
                     change): a tensor planned for fewer is left out of the round, and one that dropouts leave with
                     fewer is withheld: its uploaders' self-mask seeds for it stay secret.
    """

    bits: int = 32
    clip_range: float = 0.5
    threshold: float | int = 0.5
    min_contributors: int = 2

    def __post_init__(self) -> None:
        if not 8 <= self.bits <= 62:
            raise SecureAggregationError(f"secure.bits={self.bits}: must be in 8..62 (fix: use 32)")
        if not self.clip_range > 0:
            raise SecureAggregationError(f"secure.clip_range={self.clip_range}: must be positive (fix: use 0.5)")
        count = isinstance(self.threshold, int) and not isinstance(self.threshold, bool)
        if (count and self.threshold < 2) or (not count and not 0 < self.threshold <= 1):
            raise SecureAggregationError(
                f"secure.threshold={self.threshold}: a share of the round's clients in (0, 1] or a count >= 2 "
                "(fix: use 0.5)"
            )
        if self.min_contributors < 1:
            raise SecureAggregationError(f"secure.min_contributors={self.min_contributors}: must be >= 1 (fix: 2)")

    def threshold_for(self, clients: int) -> int:
        """The Shamir threshold t of a round whose key set-up `clients` clients answered."""
        if isinstance(self.threshold, int) and not isinstance(self.threshold, bool):
            wanted = self.threshold
        else:
            wanted = math.ceil(self.threshold * clients - 1e-9)
        return max(2, wanted)

    def levels(self, clients: int) -> int:
        """Quantisation levels per sign of one client's entry: the largest L with clients * L < 2^(bits-1), so that
        the sum of every client's entries, each in [-L, L], is decoded without wrapping around."""
        levels = ((1 << (self.bits - 1)) - 1) // max(1, clients)
        if levels < 1:
            raise SecureAggregationError(
                f"secure.bits={self.bits} leaves no quantisation level for {clients} clients (fix: raise secure.bits)"
            )
        return levels

    def step(self, clients: int) -> float:
        """One quantisation step for a round of `clients` clients: the error of one entry of one client is < step."""
        return self.clip_range / self.levels(clients)
