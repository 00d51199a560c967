"""Secure aggregation of per-tensor uploads (`fedhello.secure`), in process: sums, dropouts, thresholds, and what
the server receives. Small tensors; the whole file runs in a few seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2

from fedhello.secure import (
    MASKED_INPUT,
    SETUP,
    STAGES,
    UNMASK,
    InProcessExchange,
    SecureAggregationError,
    SecureSettings,
    handle,
    local_clients,
    members_and_shapes,
    secure_sum,
)
from fedhello.secure.quantize import quantize

# clients train different tensors: "a" all four, "b" clients 0-2, "c" clients 1 and 3, "d" client 2 alone
PLANS = {0: ("a", "b"), 1: ("a", "b", "c"), 2: ("a", "b", "d"), 3: ("a", "c")}
SHAPES = {"a": (6, 5), "b": (7,), "c": (3, 4), "d": (2,)}


def make_deltas(scale: float = 0.05, seed: int = 0) -> dict[int, dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return {c: {n: torch.randn(SHAPES[n], generator=gen) * scale for n in names} for c, names in PLANS.items()}


def run(deltas, settings=SecureSettings(), drop_at=None, record=False, clients=None):
    members, shapes = members_and_shapes(deltas)
    rngs = {c: np.random.default_rng(c) for c in deltas}
    exchange = InProcessExchange(clients or local_clients(deltas, rngs), drop_at or {}, record)
    return secure_sum(exchange, sorted(deltas), members, shapes, settings), exchange


def assert_sums(result, deltas, settings):
    """Each released sum is within len(contributors) * step of the sum of the contributors' clipped changes: every
    client's stochastic rounding moves an entry by less than one step (float64 decoding adds ~1e-16 relative)."""
    assert result.sums, "nothing was released"
    for name, total in result.sums.items():
        exact = sum(
            deltas[c][name].double().clamp(-settings.clip_range, settings.clip_range) for c in result.contributors[name]
        )
        bound = result.error_bound(name)
        assert bound == len(result.contributors[name]) * settings.step(len(deltas))
        assert (total - exact).abs().max().item() <= bound * (1 + 1e-9), name


def test_sums_match_plain_per_tensor_sums_within_the_quantisation_bound():
    deltas = make_deltas()
    deltas[0]["a"][0, 0] = 3.0  # beyond clip_range: the sum is of clipped changes
    settings = SecureSettings()
    result, _ = run(deltas, settings)
    assert result.contributors == {"a": [0, 1, 2, 3], "b": [0, 1, 2], "c": [1, 3]}
    assert "d" in result.excluded and "d" not in result.sums  # one uploader: its sum would be its change
    assert result.survivors == [0, 1, 2, 3] and result.dropped == [] and result.lost == {}
    assert result.step < 1e-8  # 32 bits, 4 clients: the bound is tight, not vacuous
    assert_sums(result, deltas, settings)
    assert result.sums["a"][0, 0] > 0.5 - 5 * result.step  # client 0's clipped entry (0.5) is in the sum


@pytest.mark.parametrize("bits", [12, 62])
def test_other_moduli(bits):
    deltas = make_deltas()
    settings = SecureSettings(bits=bits, clip_range=0.2)
    result, _ = run(deltas, settings)
    assert_sums(result, deltas, settings)


def test_dropout_after_key_sharing_gives_the_survivors_sum():
    deltas = make_deltas()
    settings = SecureSettings()
    result, _ = run(deltas, settings, drop_at={3: MASKED_INPUT})  # shared its keys, never sent its input
    assert result.dropped == [3] and result.survivors == [0, 1, 2]
    assert result.contributors["a"] == [0, 1, 2]
    # "c" was uploaded by 1 and 3: with 3 gone its sum would be client 1's change, so it is withheld
    assert "c" not in result.sums and "withheld" in result.excluded["c"]
    assert_sums(result, deltas, settings)


def test_dropout_at_unmask_keeps_the_input():
    deltas = make_deltas()
    result, _ = run(deltas, drop_at={2: UNMASK})  # its masked input arrived, its shares did not
    assert result.survivors == [0, 1, 2, 3] and result.contributors["b"] == [0, 1, 2]
    assert_sums(result, deltas, SecureSettings())


def test_dropout_below_threshold_fails_in_one_line():
    deltas = make_deltas()
    with pytest.raises(SecureAggregationError, match=r"masked inputs came from 2 of 4 clients.*threshold 3.*fix"):
        run(deltas, SecureSettings(threshold=0.75), drop_at={1: MASKED_INPUT, 3: MASKED_INPUT})
    with pytest.raises(SecureAggregationError, match="unmask shares came from 1 of 4.*threshold 2"):
        run(deltas, drop_at={0: UNMASK, 1: UNMASK, 2: UNMASK})


def reply_arrays(reply):
    """Every array in a reply, with the key it came under."""
    for key, value in reply.items():
        if isinstance(value, dict):
            for name, inner in value.items():
                yield key, name, inner
        elif isinstance(value, np.ndarray | torch.Tensor):
            yield key, None, value


def test_the_server_never_holds_an_unmasked_update():
    """Everything the server receives, recorded at the transport: arrays only as masked uint32 vectors, none equal
    (or within one quantisation step) to any client's quantised change, each uniform modulo 2^32."""
    shapes = {"a": (40, 50), "b": (1500,)}
    gen = torch.Generator().manual_seed(1)
    deltas = {c: {n: torch.randn(s, generator=gen) * 0.01 for n, s in shapes.items()} for c in range(3)}
    deltas[0] = {n: torch.zeros(s) for n, s in shapes.items()}  # the most structured change there is
    settings = SecureSettings()
    result, exchange = run(deltas, settings, drop_at={2: MASKED_INPUT}, record=True)
    assert_sums(result, deltas, settings)
    step, bits = result.step, settings.bits
    # the clients' quantised changes, before any mask: floor(x / step) and the entry above are what rounding gives
    floors = {
        (c, n): np.floor(d.double().numpy() / step).astype(np.int64) for c, cd in deltas.items() for n, d in cd.items()
    }
    received = [
        (stage, client, key, name, array)
        for stage, client, reply in exchange.received
        for key, name, array in reply_arrays(reply)
    ]
    assert {stage for stage, *_ in received} == {MASKED_INPUT}
    assert all(key == "masked" and array.dtype == np.uint32 for _, _, key, _, array in received)
    for _, client, _, name, array in received:
        for (owner, tensor), floor in floors.items():
            if floor.shape != array.shape:
                continue
            offset = (array.astype(np.int64) - floor) % (1 << bits)
            close = np.isin(offset, [0, 1]) | (offset == (1 << bits) - 1)
            assert close.mean() < 0.01, f"client {client}'s {name} is client {owner}'s {tensor} unmasked"
        # uniform modulo 2^32: the top 4 bits fall in 16 equal buckets. Chi-square, 15 degrees of freedom, each
        # vector fails by chance with probability 1e-6 (4 vectors here: a false failure once in 250,000 runs)
        counts = np.bincount((array >> np.uint32(bits - 4)).astype(np.int64).ravel(), minlength=16)
        expected = array.size / 16
        statistic = ((counts - expected) ** 2 / expected).sum()
        assert chi2.sf(statistic, 15) > 1e-6, f"client {client}'s {name} is not uniform (chi2 {statistic:.1f})"
    # the other replies are public keys, recipients' ids and shares (encrypted, or of seeds and keys): no floats
    for _, _, reply in exchange.received:
        for key, value in reply.items():
            values = value if isinstance(value, list) else [value]
            kind = int if key == "dst" else bytes
            assert key == "masked" or all(isinstance(v, kind) for v in values), key


def test_masks_differ_per_tensor():
    deltas = {c: {"x": torch.zeros(64), "y": torch.zeros(64)} for c in range(2)}
    _, exchange = run(deltas, record=True)
    masked = [reply["masked"] for stage, _, reply in exchange.received if stage == MASKED_INPUT]
    assert all(not np.array_equal(m["x"], m["y"]) for m in masked)


class Cheater:
    """A client that uploads one tensor more than its plan declares."""

    def __init__(self, honest):
        self.honest = honest

    def __call__(self, stage, payload):
        reply = self.honest(stage, payload)
        if stage == MASKED_INPUT:
            reply["masked"]["c"] = np.zeros(SHAPES["c"], dtype=np.uint32)
        return reply


def test_an_undeclared_tensor_is_refused():
    deltas = make_deltas()
    clients = local_clients(deltas)
    clients[0] = Cheater(clients[0])
    result, _ = run(deltas, clients=clients)
    assert "did not declare" in result.lost[0] and "['c']" in result.lost[0]
    assert result.dropped == [0] and result.contributors["a"] == [1, 2, 3]
    assert_sums(result, deltas, SecureSettings())


def test_a_client_refuses_to_mask_what_it_did_not_train():
    deltas = make_deltas()
    members, shapes = members_and_shapes(deltas)
    members["c"] = [0, 1, 3]  # the server claims client 0 uploads "c"
    exchange = InProcessExchange(local_clients(deltas))
    result = secure_sum(exchange, sorted(deltas), members, shapes, SecureSettings())
    assert "untrained tensors ['c']" in exchange.refusals[0]  # it sends nothing: a dropout to the server
    assert result.dropped == [0] and result.lost[0] == "no reply to masked-input"
    assert_sums(result, deltas, SecureSettings())


def plain_data(state: dict) -> bool:
    plain = (int, float, str, bytes)
    return all(
        isinstance(v, plain) or (isinstance(v, list) and all(isinstance(x, plain) for x in v)) for v in state.values()
    )


def test_client_state_is_plain_data_and_stages_run_in_order():
    """The secrets between stages are ConfigRecord values (a Flower ClientApp keeps them in `context.state`), the
    stages run in order, and no secret outlives the round."""
    deltas = make_deltas()
    clients = local_clients(deltas)
    seen: list[str] = []

    def watched(client):
        def call(stage, payload):
            reply = client(stage, payload)
            assert plain_data(client.state), stage
            seen.append(stage)
            return reply

        return call

    run(deltas, clients={c: watched(client) for c, client in clients.items()})
    assert set(seen) == set(STAGES) and all(not client.state for client in clients.values())
    state: dict = {}
    handle(SETUP, {"bits": 32, "clip-range": 0.5}, state, client_id=4)
    with pytest.raises(SecureAggregationError, match="before finishing 'share-keys'"):
        handle(MASKED_INPUT, {}, state, client_id=4)


def test_settings_errors_name_the_field_and_the_fix():
    with pytest.raises(SecureAggregationError, match=r"secure\.bits=64.*fix"):
        SecureSettings(bits=64)
    with pytest.raises(SecureAggregationError, match=r"secure\.threshold=1.*fix"):
        SecureSettings(threshold=1)
    with pytest.raises(SecureAggregationError, match=r"secure\.bits=8 leaves no quantisation level for 300 clients"):
        SecureSettings(bits=8).levels(300)
    assert SecureSettings(threshold=0.5).threshold_for(5) == 3
    assert SecureSettings(threshold=0.1).threshold_for(5) == 2  # never below 2
    assert SecureSettings(threshold=4).threshold_for(10) == 4


def test_quantize_rounds_stochastically_without_bias():
    rng = np.random.default_rng(0)
    values = np.full(20000, 0.25)
    q = quantize(values, 1.0, 1.0, 16, rng)
    assert set(np.unique(q)) == {0, 1} and abs(q.mean() - 0.25) < 0.02


def test_the_package_touches_flower_only_for_its_crypto():
    """An algorithm package: Flower's secure-aggregation primitives are imported in `secure/crypto.py` and nowhere
    else, and nothing of fedhello's engines or command line is."""
    import ast
    from pathlib import Path

    import fedhello.secure

    allowed = ("flwr.common.secure_aggregation", "flwr.supercore.primitives.asymmetric")
    for path in Path(fedhello.secure.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            for name in names:
                assert not name.startswith(("fedhello.engines", "fedhello.cli", "fedhello.server")), (path, name)
                if name.startswith("flwr"):
                    assert path.name == "crypto.py" and name.startswith(allowed), (path, name)
