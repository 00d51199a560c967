"""Fixed-point encoding of changes as integers modulo 2^bits, and decoding of their sums.

Signed encoding: an entry x, clipped to [-c, c], becomes the integer q = x / step rounded stochastically (down or
up, with the probability that makes E[q] = x / step), stored modulo 2^bits. A sum of n encodings, each in
[-L, L] with n * L < 2^(bits-1) (`SecureSettings.levels`), is decoded by reading residues of 2^(bits-1) and above
as negative numbers. Each client's rounding moves an entry by less than one step, so a decoded sum is within
n steps of the sum of the clipped changes.
"""

from __future__ import annotations

import numpy as np


def quantize(values: np.ndarray, clip_range: float, step: float, bits: int, rng: np.random.Generator) -> np.ndarray:
    """`values` (float) clipped, scaled by 1/step, rounded stochastically, modulo 2^bits (uint64)."""
    scaled = np.clip(np.asarray(values, dtype=np.float64), -clip_range, clip_range) / step
    low = np.floor(scaled)
    rounded = low + (rng.random(scaled.shape) < scaled - low)
    return rounded.astype(np.int64).astype(np.uint64) & np.uint64((1 << bits) - 1)


def dequantize_sum(total: np.ndarray, step: float, bits: int) -> np.ndarray:
    """Float64 value of a sum of encodings (uint64 modulo 2^bits), read as a signed number."""
    modulus = 1 << bits
    signed = total.astype(np.int64)
    signed = np.where(signed >= modulus // 2, signed - modulus, signed)
    return signed.astype(np.float64) * step
