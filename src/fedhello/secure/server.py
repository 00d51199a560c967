"""The server side of a round: `secure_sum` drives the four stages over any transport and returns per-tensor sums.

The server learns each tensor's sum over the surviving clients that uploaded it, never one client's change: every
masked vector it receives carries the client's self mask (removed only in the sum, from the reconstructed seed) and
pairwise masks that cancel between the clients uploading that tensor. Per client it reconstructs either self-mask
seeds (it survived: the seeds of its released tensor groups) or its mask key (it dropped: its pairwise masks are
removed from the others' vectors), never both.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fedhello.secure import crypto
from fedhello.secure.client import MASKED_INPUT, SETUP, SHARE_KEYS, UNMASK, Payload, wire_dtype
from fedhello.secure.quantize import dequantize_sum
from fedhello.secure.settings import SecureAggregationError, SecureSettings

Exchange = Callable[[str, dict[int, Payload]], dict[int, Payload]]
"""The transport: sends each client its payload of a stage, returns the replies; a client absent from them dropped."""


@dataclass
class SecureResult:
    """A round of secure aggregation, as the server sees it.

    sums          tensor name -> float64 sum of the contributors' (clipped, quantised) changes
    contributors  tensor name -> the clients whose change is in that sum (survivors that uploaded it)
    survivors     clients whose masked input is in the sums
    dropped       clients that shared keys but whose input is not in the sums (their pairwise masks were removed)
    lost          every asked client not among the survivors -> why (stage and reason)
    excluded      tensor name -> why it was left out (fewer members than `min_contributors`)
    step          quantisation step: each sum is within len(contributors) * step of the clipped changes' sum
    threshold     the round's Shamir threshold t
    traffic       stage -> client -> {"down": bytes sent to it, "up": bytes it sent}
    seconds       stage -> wall seconds (transport and server work)
    """

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    contributors: dict[str, list[int]] = field(default_factory=dict)
    survivors: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    lost: dict[int, str] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    step: float = 0.0
    threshold: int = 0
    traffic: dict[str, dict[int, dict[str, int]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def error_bound(self, name: str) -> float:
        """Largest difference between `sums[name]` and the exact sum of the contributors' clipped changes."""
        return len(self.contributors.get(name, ())) * self.step


def payload_bytes(value: Any) -> int:
    """Bytes a payload occupies on the wire, counted as raw data: arrays, byte strings, text, 8 per number."""
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, Mapping):
        return sum(payload_bytes(k) + payload_bytes(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return sum(payload_bytes(v) for v in value)
    return 8


class _Round:
    """One call of `secure_sum`: the stages in order, each narrowing the set of clients still in."""

    def __init__(
        self,
        exchange: Exchange,
        participants: Iterable[int],
        tensor_members: Mapping[str, Iterable[int]],
        shapes: Mapping[str, tuple[int, ...]],
        settings: SecureSettings,
    ) -> None:
        self.exchange = exchange
        self.settings = settings
        self.participants = sorted({int(c) for c in participants})
        self.members = {name: sorted({int(c) for c in ids}) for name, ids in tensor_members.items()}
        self.shapes = {name: tuple(int(d) for d in shapes[name]) for name in self.members}
        strangers = sorted({c for ids in self.members.values() for c in ids} - set(self.participants))
        if strangers:
            raise SecureAggregationError(f"secure aggregation: tensor members {strangers} are not participants")
        self.result = SecureResult(threshold=settings.threshold_for(len(self.participants)))
        self.keys: dict[int, tuple[bytes, bytes]] = {}  # client -> (channel key, mask key), public
        self.tensors: dict[str, list[int]] = {}  # tensor -> its members that shared keys (not excluded)
        self.group_of: dict[int, dict[str, int]] = {}  # client -> tensor -> its self-mask seed group

    def send(self, stage: str, payloads: dict[int, Payload]) -> dict[int, Payload]:
        started = time.perf_counter()
        replies = {c: r for c, r in self.exchange(stage, payloads).items() if c in payloads}
        self.result.traffic[stage] = {
            c: {"down": payload_bytes(p), "up": payload_bytes(replies.get(c, {}))} for c, p in payloads.items()
        }
        for client in sorted(set(payloads) - set(replies)):
            self.result.lost[client] = f"no reply to {stage}"
        self.result.seconds[stage] = time.perf_counter() - started
        return replies

    def refuse(self, client: int, stage: str, why: str) -> None:
        self.result.lost[client] = f"{stage}: {why}"

    def enough(self, count: int, what: str) -> None:
        if count < self.result.threshold:
            raise SecureAggregationError(
                f"secure aggregation: {what} {count} of {len(self.participants)} clients, fewer than the threshold "
                f"{self.result.threshold} (fix: lower secure.threshold or sample more clients per round)"
            )

    # --- stage 0: each client makes its two key pairs --------------------------------------------------------
    def setup(self) -> list[int]:
        payload = {"bits": self.settings.bits, "clip-range": float(self.settings.clip_range)}
        replies = self.send(SETUP, {c: payload for c in self.participants})
        seen: set[bytes] = set()
        for client, reply in sorted(replies.items()):
            keys = (reply.get("pk-channel"), reply.get("pk-mask"))
            if not all(isinstance(k, bytes) and k for k in keys) or seen & set(keys) or keys[0] == keys[1]:
                self.refuse(client, SETUP, "malformed or repeated public keys")
                continue
            seen |= set(keys)
            self.keys[client] = (bytes(keys[0]), bytes(keys[1]))
        ready = sorted(self.keys)
        self.enough(len(ready), "public keys came from")
        self.result.step = self.settings.step(len(ready))
        return ready

    # --- stage 1: broadcast the keys; each client returns its shares, encrypted for their recipients -----------
    def share_keys(self, ready: list[int]) -> dict[int, dict[int, bytes]]:
        keys = {
            "ids": ready,
            "pk-channels": [self.keys[c][0] for c in ready],
            "pk-masks": [self.keys[c][1] for c in ready],
        }
        payloads = {}
        for client in ready:
            # a client's tensors grouped by their uploaders: one self-mask seed per group (`client._share_keys`)
            by_members: dict[tuple[int, ...], list[str]] = {}
            for name, ids in sorted(self.members.items()):
                inside = tuple(c for c in ids if c in self.keys)
                if client in inside:
                    by_members.setdefault(inside, []).append(name)
            groups = list(by_members.values())
            self.group_of[client] = {name: g for g, names in enumerate(groups) for name in names}
            payloads[client] = {**keys, "threshold": self.result.threshold, "groups": json.dumps(groups)}
        replies = self.send(SHARE_KEYS, payloads)
        mail: dict[int, dict[int, bytes]] = {}  # sender -> recipient -> ciphertext
        for client, reply in sorted(replies.items()):
            dst, texts = list(reply.get("dst", [])), list(reply.get("ciphertexts", []))
            if sorted(dst) != [c for c in ready if c != client] or len(texts) != len(dst):
                self.refuse(client, SHARE_KEYS, "did not send one share to every other client")
                continue
            mail[client] = {int(d): bytes(t) for d, t in zip(dst, texts, strict=True)}
        self.enough(len(mail), "key shares came from")
        return mail

    # --- stage 2: forward the shares; each client returns its masked change of the tensors it uploads ----------
    def masked_input(self, mail: dict[int, dict[int, bytes]]) -> dict[int, dict[str, np.ndarray]]:
        keyed = sorted(mail)
        for name, ids in self.members.items():
            inside = [c for c in ids if c in mail]
            if 0 < len(inside) < self.settings.min_contributors:
                self.result.excluded[name] = (
                    f"{len(inside)} client(s) upload it, fewer than secure.min_contributors="
                    f"{self.settings.min_contributors}: its sum would be one client's change"
                )
            elif inside:
                self.tensors[name] = inside
        payloads = {}
        for client in keyed:
            senders = [c for c in keyed if c != client]
            peers = {n: [c for c in ids if c != client] for n, ids in self.tensors.items() if client in ids}
            payloads[client] = {
                "src": senders,
                "ciphertexts": [mail[s][client] for s in senders],
                "peers": json.dumps(peers, sort_keys=True),
            }
        replies = self.send(MASKED_INPUT, payloads)
        inputs: dict[int, dict[str, np.ndarray]] = {}
        for client, reply in sorted(replies.items()):
            why = self.check_masked(client, reply.get("masked"))
            if why:
                self.refuse(client, MASKED_INPUT, why)
            else:
                inputs[client] = {n: np.asarray(a).astype(np.uint64) for n, a in reply["masked"].items()}
        return inputs

    def check_masked(self, client: int, masked: Any) -> str | None:
        """Why a masked-input reply is refused, or None: exactly the tensors asked, in their shapes, in range."""
        if not isinstance(masked, Mapping):
            return "no masked tensors"
        asked = {n for n, ids in self.tensors.items() if client in ids}
        extra, missing = sorted(set(masked) - asked), sorted(asked - set(masked))
        if extra:
            return f"uploaded tensor(s) {extra} it did not declare"
        if missing:
            return f"did not upload tensor(s) {missing}"
        for name, array in masked.items():
            if not isinstance(array, np.ndarray) or array.dtype != wire_dtype(self.settings.bits):
                return f"{name} is not a {wire_dtype(self.settings.bits)} array"
            if tuple(array.shape) != self.shapes[name]:
                return f"{name} has shape {list(array.shape)}, expected {list(self.shapes[name])}"
            if array.size and int(array.max()) >= 1 << self.settings.bits:
                return f"{name} has values outside [0, 2^{self.settings.bits})"
        return None

    def release(self, inputs: dict[int, dict[str, np.ndarray]]) -> dict[str, list[int]]:
        """The tensors whose sums are unmasked, with their contributors: each needs `min_contributors` uploaders
        whose masked input arrived; a tensor left with fewer is withheld, its uploaders' seeds of it kept secret."""
        released = {}
        for name, ids in self.tensors.items():
            left = [c for c in ids if c in inputs]
            if len(left) >= self.settings.min_contributors:
                released[name] = left
            elif left:
                self.result.excluded[name] = (
                    f"withheld: only client(s) {left} of its uploaders sent their input (secure.min_contributors="
                    f"{self.settings.min_contributors})"
                )
        return released

    # --- stage 3: survivors return shares of the released seeds and of the dropped clients' mask keys ----------
    def unmask(
        self, survivors: list[int], dropped: list[int], released: dict[str, list[int]]
    ) -> tuple[dict[tuple[int, int], bytes], dict[int, bytes]]:
        wanted = sorted({(c, self.group_of[c][name]) for name, ids in released.items() for c in ids})
        payload = {
            "survivors": survivors,
            "dropped": dropped,
            "b-ids": [c for c, _ in wanted],
            "b-groups": [g for _, g in wanted],
        }
        replies = self.send(UNMASK, {c: payload for c in survivors})
        shares: list[Payload] = []
        for client, reply in sorted(replies.items()):
            seeds, keys = list(reply.get("b-shares", [])), list(reply.get("sk-shares", []))
            if len(seeds) != len(wanted) or len(keys) != len(dropped):
                self.refuse(client, UNMASK, "malformed shares")
                continue
            shares.append(reply)
        self.enough(len(shares), "unmask shares came from")
        t = self.result.threshold
        seeds = {w: self.combine([r["b-shares"][i] for r in shares[:t]], w[0]) for i, w in enumerate(wanted)}
        keys = {c: self.combine([r["sk-shares"][i] for r in shares[:t]], c) for i, c in enumerate(dropped)}
        for client, key in keys.items():
            if not crypto.matches(key, self.keys[client][1]):
                raise SecureAggregationError(f"secure aggregation: the shares of client {client}'s mask key are wrong")
        return seeds, keys

    @staticmethod
    def combine(shares: list[bytes], client: int) -> bytes:
        try:
            return crypto.combine_shares([bytes(s) for s in shares])
        except (ValueError, IndexError) as err:
            raise SecureAggregationError(f"secure aggregation: client {client}'s secret shares do not combine") from err

    def total(
        self,
        inputs: dict[int, dict[str, np.ndarray]],
        released: dict[str, list[int]],
        seeds: dict[tuple[int, int], bytes],
        keys: dict[int, bytes],
    ) -> None:
        """Unmask every tensor's sum: drop the survivors' self masks and the dropped clients' pairwise masks."""
        bits, modulus = self.settings.bits, np.uint64((1 << self.settings.bits) - 1)
        pair_secrets: dict[tuple[int, int], bytes] = {}
        for name, summed in sorted(released.items()):
            ids = self.tensors[name]
            shape = self.shapes[name]
            total = np.zeros(shape, dtype=np.uint64)
            for client in summed:  # uint64 wraps modulo 2^64, a multiple of 2^bits
                seed = seeds[client, self.group_of[client][name]]
                total = total + inputs[client][name] - crypto.mask(seed, crypto.SELF, name, shape, bits)
            for gone in (c for c in ids if c in keys):
                for client in summed:
                    if (gone, client) not in pair_secrets:
                        pair_secrets[gone, client] = crypto.shared_secret(keys[gone], self.keys[client][1])
                    pair = crypto.mask(pair_secrets[gone, client], crypto.PAIR, name, shape, bits)
                    total = total - pair if client > gone else total + pair  # undo what `client` added
            self.result.sums[name] = torch.from_numpy(dequantize_sum(total & modulus, self.result.step, bits))
            self.result.contributors[name] = summed


def secure_sum(
    exchange: Exchange,
    participants: Iterable[int],
    tensor_members: Mapping[str, Iterable[int]],
    shapes: Mapping[str, tuple[int, ...]],
    settings: SecureSettings,
) -> SecureResult:
    """Run one round of secure aggregation among `participants` over `exchange` and return the per-tensor sums.

    `tensor_members` names, per tensor, the clients whose plan uploads it and `shapes` its shape (every member
    uploads that shape). Raises `SecureAggregationError` when fewer than the threshold of clients remain at any stage.
    """
    round_ = _Round(exchange, participants, tensor_members, shapes, settings)
    ready = round_.setup()
    mail = round_.share_keys(ready)
    inputs = round_.masked_input(mail)
    survivors, dropped = sorted(inputs), sorted(set(mail) - set(inputs))
    round_.enough(len(survivors), "masked inputs came from")
    released = round_.release(inputs)
    seeds, keys = round_.unmask(survivors, dropped, released)
    round_.total(inputs, released, seeds, keys)
    result = round_.result
    result.survivors, result.dropped = survivors, dropped
    return result
