"""The client side of a round: one handler per stage, secrets kept in a plain dict between stages.

`handle(stage, payload, state, client_id=..., delta=..., rng=...)` answers one stage's payload. `state` holds this
round's secrets as ints, floats, bytes and lists of them only (`ConfigRecord`-compatible), so a Flower ClientApp can
keep it in `context.state` between messages; it is reset by the set-up stage and emptied after the unmask stage.
Each handler checks what the server asks against what the client already knows and raises
`SecureAggregationError` rather than send a share or a mask it should not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from fedhello.secure import crypto
from fedhello.secure.quantize import quantize
from fedhello.secure.settings import SecureAggregationError, SecureSettings

SETUP, SHARE_KEYS, MASKED_INPUT, UNMASK = "setup", "share-keys", "masked-input", "unmask"
STAGES = (SETUP, SHARE_KEYS, MASKED_INPUT, UNMASK)

Payload = dict[str, Any]
Delta = Mapping[str, torch.Tensor | np.ndarray]


def wire_dtype(bits: int) -> np.dtype:
    """The dtype masked arrays travel in: the smallest unsigned integer that holds 2^bits - 1."""
    return np.dtype(np.uint32) if bits <= 32 else np.dtype(np.uint64)


def handle(
    stage: str,
    payload: Payload,
    state: dict[str, Any],
    *,
    client_id: int,
    delta: Delta | None = None,
    rng: np.random.Generator | None = None,
) -> Payload:
    """This client's reply to `stage` (one of `STAGES`); `delta` (its change per uploaded tensor) is needed by the
    masked-input stage only, `rng` draws its stochastic rounding (default: fresh OS entropy)."""
    if stage not in _HANDLERS:
        raise SecureAggregationError(f"secure aggregation: unknown stage {stage!r}; known: {list(STAGES)}")
    expected = STAGES[STAGES.index(stage) - 1] if stage != SETUP else None
    if expected is not None and (state.get("done") != expected or state.get("client-id") != client_id):
        raise SecureAggregationError(
            f"secure aggregation: client {client_id} got stage {stage!r} before finishing {expected!r} of this round"
        )
    if stage == SETUP:
        state.clear()
        state["client-id"] = client_id
    reply = _HANDLERS[stage](payload, state, delta, rng)
    state["done"] = stage
    if stage == UNMASK:
        state.clear()  # the round is over: no secret outlives it
    return reply


def _setup(payload: Payload, state: dict[str, Any], delta: Delta | None, rng: np.random.Generator | None) -> Payload:
    settings = SecureSettings(bits=int(payload["bits"]), clip_range=float(payload["clip-range"]))
    state["bits"], state["clip-range"] = settings.bits, settings.clip_range
    state["sk-channel"], state["pk-channel"] = crypto.key_pair()
    state["sk-mask"], state["pk-mask"] = crypto.key_pair()
    return {"pk-channel": state["pk-channel"], "pk-mask": state["pk-mask"]}


def _share_keys(
    payload: Payload, state: dict[str, Any], delta: Delta | None, rng: np.random.Generator | None
) -> Payload:
    me = state["client-id"]
    ids = [int(i) for i in payload["ids"]]
    channels, masks = list(payload["pk-channels"]), list(payload["pk-masks"])
    threshold = int(payload["threshold"])
    groups: list[list[str]] = json.loads(str(payload["groups"]))
    if ids != sorted(set(ids)) or len(channels) != len(ids) or len(masks) != len(ids):
        raise SecureAggregationError("secure aggregation: the server's key list is malformed")
    if me not in ids or channels[ids.index(me)] != state["pk-channel"] or masks[ids.index(me)] != state["pk-mask"]:
        raise SecureAggregationError(f"secure aggregation: client {me}'s own public keys are not in the key list")
    if len(set(channels) | set(masks)) != 2 * len(ids):
        raise SecureAggregationError("secure aggregation: two public keys of the round are identical")
    if not 2 <= threshold <= len(ids):
        raise SecureAggregationError(f"secure aggregation: threshold {threshold} for {len(ids)} clients")
    state.update({"ids": ids, "pk-channels": channels, "pk-masks": masks, "threshold": threshold})
    # one self-mask seed per group of tensors with the same uploaders: a group whose sum cannot be released (too
    # few of its uploaders survived) keeps its seed secret while the client's other groups are unmasked
    state["groups"] = json.dumps(groups)
    state["seeds"] = [crypto.new_seed() for _ in groups]
    b_shares = [crypto.create_shares(seed, threshold, len(ids)) for seed in state["seeds"]]
    sk_shares = crypto.create_shares(state["sk-mask"], threshold, len(ids))
    # share i of each secret belongs to ids[i]; a recipient gets the shares of all seeds in one blob, this client
    # keeps its own
    blobs = [b"".join(shares[i] for shares in b_shares) for i in range(len(ids))]
    mine = ids.index(me)
    state["share-from"], state["share-b"], state["share-sk"] = [me], [blobs[mine]], [sk_shares[mine]]
    dst, ciphertexts = [], []
    for index, (peer, channel) in enumerate(zip(ids, channels, strict=True)):
        if peer == me:
            continue
        key = crypto.shared_secret(state["sk-channel"], channel)
        plaintext = crypto.share_keys_plaintext_concat(me, peer, blobs[index], sk_shares[index])
        dst.append(peer)
        ciphertexts.append(crypto.encrypt(key, plaintext))
    return {"dst": dst, "ciphertexts": ciphertexts}


def _masked_input(
    payload: Payload, state: dict[str, Any], delta: Delta | None, rng: np.random.Generator | None
) -> Payload:
    me, ids = state["client-id"], state["ids"]
    sources = [int(i) for i in payload["src"]]
    if len(sources) != len(payload["ciphertexts"]) or not set(sources) <= set(ids) - {me}:
        raise SecureAggregationError("secure aggregation: the server forwarded shares from clients outside the round")
    for src, ciphertext in zip(sources, payload["ciphertexts"], strict=True):
        key = crypto.shared_secret(state["sk-channel"], state["pk-channels"][ids.index(src)])
        actual, dst, b_share, sk_share = crypto.share_keys_plaintext_separate(crypto.decrypt(key, ciphertext))
        if actual != src or dst != me:
            raise SecureAggregationError(f"secure aggregation: a share from client {src} was not addressed to {me}")
        state["share-from"].append(src)
        state["share-b"].append(b_share)
        state["share-sk"].append(sk_share)
    members = sorted({*sources, me})
    if len(members) < state["threshold"]:
        raise SecureAggregationError(
            f"secure aggregation: {len(members)} clients shared keys, fewer than the threshold {state['threshold']}"
        )
    state["members"] = members
    group_of = {name: g for g, names in enumerate(json.loads(state["groups"])) for name in names}
    peers: dict[str, list[int]] = json.loads(str(payload["peers"]))
    undeclared = sorted(set(peers) - set(group_of))
    if undeclared:
        raise SecureAggregationError(f"secure aggregation: the server asks client {me} for undeclared {undeclared}")
    if delta is None:
        raise SecureAggregationError("secure aggregation: the masked-input stage needs the client's change (delta)")
    missing = sorted(set(peers) - set(delta))
    if missing:
        raise SecureAggregationError(f"secure aggregation: the server asks client {me} for untrained tensors {missing}")
    bits = state["bits"]
    step = SecureSettings(bits=bits, clip_range=state["clip-range"]).step(len(ids))
    rng = rng if rng is not None else np.random.default_rng()
    secrets: dict[int, bytes] = {}
    masked: dict[str, np.ndarray] = {}
    for name, tensor_peers in sorted(peers.items()):
        if not set(tensor_peers) <= set(members) - {me}:
            raise SecureAggregationError(f"secure aggregation: peers of {name} are outside the round's key set")
        values = _numpy(delta[name])
        if not np.isfinite(values).all():  # the server cannot check a masked value: the client must
            raise SecureAggregationError(f"secure aggregation: client {me}'s change of {name} is not finite")
        total = quantize(values, state["clip-range"], step, bits, rng)
        total = total + crypto.mask(state["seeds"][group_of[name]], crypto.SELF, name, values.shape, bits)
        for peer in tensor_peers:
            if peer not in secrets:
                secrets[peer] = crypto.shared_secret(state["sk-mask"], state["pk-masks"][ids.index(peer)])
            pair = crypto.mask(secrets[peer], crypto.PAIR, name, values.shape, bits)
            # the larger id adds, the smaller subtracts: the pair's masks cancel in the sum
            total = total + pair if me > peer else total - pair
        masked[name] = (total & np.uint64((1 << bits) - 1)).astype(wire_dtype(bits))
    return {"masked": masked}


def _unmask(payload: Payload, state: dict[str, Any], delta: Delta | None, rng: np.random.Generator | None) -> Payload:
    survivors = {int(i) for i in payload["survivors"]}
    dropped = [int(i) for i in payload["dropped"]]
    seed_ids, seed_groups = [int(i) for i in payload["b-ids"]], [int(g) for g in payload["b-groups"]]
    # never a share of both secrets of one client: with a seed and the mask key the server would unmask its input
    if survivors & set(dropped) or not survivors | set(dropped) <= set(state["members"]):
        raise SecureAggregationError("secure aggregation: the unmask request names a client twice or a stranger")
    if not set(seed_ids) <= survivors or len(seed_ids) != len(seed_groups):
        raise SecureAggregationError("secure aggregation: the unmask request asks for seeds of non-survivors")
    if len(survivors) < state["threshold"]:
        raise SecureAggregationError(
            f"secure aggregation: {len(survivors)} survivors, fewer than the threshold {state['threshold']}"
        )
    holders, size = state["share-from"], crypto.SEED_SHARE_BYTES
    seed_shares = []
    for client, group in zip(seed_ids, seed_groups, strict=True):
        blob = state["share-b"][holders.index(client)]
        if not 0 <= group < len(blob) // size:
            raise SecureAggregationError(f"secure aggregation: client {client} has no seed group {group}")
        seed_shares.append(blob[group * size : (group + 1) * size])
    return {"b-shares": seed_shares, "sk-shares": [state["share-sk"][holders.index(i)] for i in dropped]}


def _numpy(tensor: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        return tensor.detach().cpu().to(torch.float64).numpy()
    return np.asarray(tensor, dtype=np.float64)


_HANDLERS: dict[str, Callable[[Payload, dict[str, Any], Delta | None, np.random.Generator | None], Payload]] = {
    SETUP: _setup,
    SHARE_KEYS: _share_keys,
    MASKED_INPUT: _masked_input,
    UNMASK: _unmask,
}
