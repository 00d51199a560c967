"""The cryptography of the protocol, all of it Flower's except the mask generator.

Key pairs (ECDH on P-384), shared keys (ECDH + HKDF-SHA256), authenticated encryption (Fernet) and Shamir's
secret sharing are Flower's own SecAgg+ primitives, imported from here only, so the rest of the package never
touches Flower. The mask generator is ours: Flower's `pseudo_rand_gen` folds its seed to 32 bits (a server could
try every self-mask seed) and draws from [0, range - 1), so its masks are neither secret enough nor uniform.
Ours expands a per-tensor key, HKDF-SHA256(secret, tensor name), with AES-256 in counter mode: standard
primitives of the `cryptography` package Flower itself uses, giving masks uniform modulo 2^bits.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flwr.common.secure_aggregation.crypto.shamir import combine_shares, create_shares
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, encrypt, generate_shared_key
from flwr.common.secure_aggregation.secaggplus_utils import (
    share_keys_plaintext_concat,
    share_keys_plaintext_separate,
)
from flwr.supercore.primitives.asymmetric import (
    bytes_to_private_key,
    bytes_to_public_key,
    generate_key_pairs,
    private_key_to_bytes,
    public_key_to_bytes,
)

__all__ = [
    "combine_shares",
    "create_shares",
    "decrypt",
    "encrypt",
    "key_pair",
    "mask",
    "matches",
    "new_seed",
    "shared_secret",
    "share_keys_plaintext_concat",
    "share_keys_plaintext_separate",
]

SEED_BYTES = 32
SEED_SHARE_BYTES = 4 + 16 * (SEED_BYTES // 16 + 1)  # a Shamir share of a seed: index, then the padded 16-byte blocks
SELF, PAIR = b"self", b"pair"  # the two kinds of mask: a client's own, and one a pair of clients shares


def key_pair() -> tuple[bytes, bytes]:
    """A fresh (private key, public key), serialised (PEM)."""
    private, public = generate_key_pairs()
    return private_key_to_bytes(private), public_key_to_bytes(public)


def shared_secret(private_key: bytes, public_key: bytes) -> bytes:
    """The secret two parties agree on from one's private key and the other's public key (the same both ways)."""
    return generate_shared_key(bytes_to_private_key(private_key), bytes_to_public_key(public_key))


def matches(private_key: bytes, public_key: bytes) -> bool:
    """Whether `public_key` belongs to `private_key` (a reconstructed key is checked before it is used)."""
    try:
        derived = bytes_to_private_key(private_key).public_key()
    except (ValueError, TypeError):
        return False
    return public_key_to_bytes(derived) == public_key


def new_seed() -> bytes:
    """A client's private self-mask seed b_u."""
    return os.urandom(SEED_BYTES)


def mask(secret: bytes, kind: bytes, name: str, shape: tuple[int, ...], bits: int) -> np.ndarray:
    """The mask of tensor `name`: uniform integers in [0, 2^bits) (uint64), a deterministic function of
    (secret, kind, name), so the two clients of a pair draw the same one and masks of different tensors differ."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fedhello-secagg/" + kind + b"/" + name.encode())
    encryptor = Cipher(algorithms.AES(key.derive(secret)), modes.CTR(b"\0" * 16)).encryptor()
    count = int(np.prod(shape, dtype=np.int64))
    stream = encryptor.update(b"\0" * (8 * count)) + encryptor.finalize()
    values = np.frombuffer(stream, dtype="<u8").astype(np.uint64)
    return (values & np.uint64((1 << bits) - 1)).reshape(shape)
