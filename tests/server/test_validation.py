"""Update validation: every malformed or hostile update is rejected with its reason and never reaches the
aggregator; well-formed ones (including rank-truncated ones) pass."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from fedhello.aggregation import masked_fedavg
from fedhello.aggregation.base import expected_shapes
from fedhello.config import ReliabilityConfig
from fedhello.plan import ClientUpdate, Plan
from fedhello.server.validation import UpdateValidator

A0, B0 = "enc.layer.0.attn.query.lora_A.default.weight", "enc.layer.0.attn.query.lora_B.default.weight"
A1, B1 = "enc.layer.1.attn.query.lora_A.default.weight", "enc.layer.1.attn.query.lora_B.default.weight"
HEAD_W = "classifier.modules_to_save.default.weight"
LAYOUT = {A0: 0, B0: 0, A1: 1, B1: 1, HEAD_W: -1}


def global_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    shapes = {A0: (4, 8), B0: (8, 4), A1: (4, 8), B1: (8, 4), HEAD_W: (3, 8)}
    return {name: torch.randn(shape) for name, shape in shapes.items()}


def honest(cid: int, plan: Plan, state: dict[str, torch.Tensor], step: float = 0.01) -> ClientUpdate:
    shapes = expected_shapes(plan, state, LAYOUT)
    tensors = {n: state[n][tuple(slice(0, k) for k in s)] + step * (cid + 1) for n, s in shapes.items()}
    return ClientUpdate(cid, plan, tensors, num_samples=10)


def _nan(u: ClientUpdate) -> None:
    u.tensors[A0] = u.tensors[A0].clone()
    u.tensors[A0][0, 0] = float("nan")


def _inf(u: ClientUpdate) -> None:
    u.tensors[HEAD_W] = u.tensors[HEAD_W].clone()
    u.tensors[HEAD_W][1, 2] = float("-inf")


def _extra(u: ClientUpdate) -> None:  # uploads a layer it was not allocated
    u.tensors[A1] = torch.zeros(4, 8)


def _missing(u: ClientUpdate) -> None:
    del u.tensors[B0]


def _shape(u: ClientUpdate) -> None:
    u.tensors[A0] = torch.zeros(5, 8)


def _dtype(u: ClientUpdate) -> None:
    u.tensors[B0] = u.tensors[B0].to(torch.float64)


def _samples(u: ClientUpdate) -> None:
    u.num_samples = -5


def _plan(u: ClientUpdate) -> None:  # claims a bigger plan than the server sent
    u.plan = Plan((0, 1))


def _not_tensor(u: ClientUpdate) -> None:
    u.tensors[A0] = [[0.0] * 8] * 4  # type: ignore[assignment]


HOSTILE = [
    ("nan", _nan, "NaN or Inf"),
    ("inf", _inf, "NaN or Inf"),
    ("extra key", _extra, "unexpected keys"),
    ("missing key", _missing, "missing keys"),
    ("shape", _shape, "shape [5, 8], expected [4, 8]"),
    ("dtype", _dtype, "dtype torch.float64"),
    ("num_samples", _samples, "num_samples"),
    ("plan", _plan, "plan mismatch"),
    ("not a tensor", _not_tensor, "not a tensor"),
]


@pytest.mark.parametrize(("kind", "corrupt", "reason"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_each_invalid_update_kind_is_rejected_and_cannot_change_the_model(kind, corrupt, reason):
    state = global_state()
    before = {k: v.clone() for k, v in state.items()}
    plans = {1: Plan((0,)), 2: Plan((0,)), 3: Plan((0,))}
    updates = [honest(cid, plan, state) for cid, plan in plans.items()]
    corrupt(updates[1])
    validator = UpdateValidator(LAYOUT, ReliabilityConfig())
    accepted, rejected = validator.split(plans, updates, state)
    assert [r.client_id for r in rejected] == [2] and reason in rejected[0].reason, rejected
    assert [u.client_id for u in accepted] == [1, 3]
    new = masked_fedavg(state, accepted)
    expected = masked_fedavg(state, [updates[0], updates[2]])
    assert all(torch.equal(new[k], expected[k]) for k in state)
    assert all(torch.equal(state[k], before[k]) for k in state), "validation must not modify the global state"
    assert all(torch.isfinite(t).all() for t in new.values())


def test_unsolicited_and_duplicate_updates_are_rejected():
    state = global_state()
    plans = {1: Plan((0,)), 2: Plan((1,))}
    updates = [honest(1, plans[1], state), honest(1, plans[1], state), honest(7, Plan((0,)), state)]
    accepted, rejected = UpdateValidator(LAYOUT, ReliabilityConfig()).split(plans, updates, state)
    assert [u.client_id for u in accepted] == [1]
    assert [(r.client_id, r.reason.split(":")[0]) for r in rejected] == [(1, "duplicate"), (7, "unsolicited")]


def test_norm_bound_rejects_the_outlier_relative_to_the_round_median():
    state = global_state()
    plans = {cid: Plan((0,) if cid % 2 else (0, 1)) for cid in range(1, 6)}
    updates = [honest(cid, plan, state, step=0.01) for cid, plan in plans.items()]
    boosted = updates[3]  # model-replacement style: a scaled-up change
    boosted.tensors = {n: state[n] + 50.0 * (t - state[n]) for n, t in boosted.tensors.items()}
    settings = ReliabilityConfig(norm_bound=5.0)
    accepted, rejected = UpdateValidator(LAYOUT, settings).split(plans, updates, state)
    assert [r.client_id for r in rejected] == [4] and "norm bound" in rejected[0].reason
    assert len(accepted) == 4
    # honest clients training more layers are not outliers: the bound is per value (RMS), not a plain norm
    accepted, rejected = UpdateValidator(LAYOUT, settings).split(
        plans, [honest(c, p, state) for c, p in plans.items()], state
    )
    assert not rejected


def test_rank_truncated_and_frozen_factor_plans_have_their_own_shapes():
    state = global_state()
    plan = Plan((0, 1), ranks={0: 2, 1: 3})
    shapes = expected_shapes(plan, state, LAYOUT)
    assert shapes[A0] == (2, 8) and shapes[B0] == (8, 2) and shapes[A1] == (3, 8) and shapes[HEAD_W] == (3, 8)
    validator = UpdateValidator(LAYOUT, ReliabilityConfig())
    good = honest(1, plan, state)
    full = ClientUpdate(2, plan, {n: state[n].clone() for n in shapes}, 10)  # untruncated: wrong for rank 2
    accepted, rejected = validator.split({1: plan, 2: plan}, [good, full], state)
    assert [u.client_id for u in accepted] == [1] and "expected [2, 8]" in rejected[0].reason
    if "train_lora_a" in Plan.__dataclass_fields__:  # FFA-LoRA style plans upload B only
        ffa = Plan((0,), train_lora_a=False)
        assert set(expected_shapes(ffa, state, LAYOUT)) == {B0, HEAD_W}


def test_an_aggregator_may_declare_its_own_expected_shapes():
    class Declares:
        def expected_shapes(self, plan, global_state, layout):  # noqa: ANN001
            return {HEAD_W: (3, 8)}  # e.g. a head-only method

    state = global_state()
    update = ClientUpdate(1, Plan((0,)), {HEAD_W: state[HEAD_W].clone()}, 3)
    accepted, rejected = UpdateValidator(LAYOUT, ReliabilityConfig(), Declares()).split(
        {1: Plan((0,))}, [update], state
    )
    assert accepted and not rejected


def test_validation_can_be_switched_off():
    state = global_state()
    update = honest(1, Plan((0,)), state)
    _nan(update)
    settings = ReliabilityConfig(validate_updates=False)
    accepted, rejected = UpdateValidator(LAYOUT, settings).split({1: Plan((0,))}, [update], state)
    assert accepted == [update] and not rejected


def _run_with(config, run_dir, tamper):  # noqa: ANN001, ANN202
    """The local engine's round loop with a man-in-the-middle on the first client of every round."""
    from fedhello.seeding import client_seed
    from fedhello.server import Coordinator, build_federation
    from fedhello.server.loop import run_rounds
    from fedhello.training import LocalTrainer

    federation = build_federation(config)
    coordinator = Coordinator(federation)
    trainer = LocalTrainer(federation.model, federation.task, federation.layout, config.train)

    def dispatch(round_num, plans, state):  # noqa: ANN001, ANN202
        updates = [
            trainer.train(cid, plan, state, federation.client_data(cid), client_seed(config.seed, round_num, cid))
            for cid, plan in plans.items()
        ]
        return tamper(updates)

    run_rounds(federation, coordinator, dispatch, run_dir)
    return coordinator.global_state


def test_a_rejected_update_is_logged_and_the_run_equals_one_where_that_client_never_replied(fast_config, tmp_path):
    import json

    config = fast_config.model_copy(deep=True)
    config.federation.rounds = 2
    config.output.save_adapter = False

    def poison(updates):  # noqa: ANN001, ANN202
        first = updates[0]
        first.tensors = {n: torch.full_like(t, float("nan")) for n, t in first.tensors.items()}
        return updates

    poisoned = _run_with(config, tmp_path / "poisoned", poison)
    silent = _run_with(config, tmp_path / "silent", lambda updates: updates[1:])
    assert all(torch.equal(poisoned[k], silent[k]) for k in poisoned)
    assert all(torch.isfinite(t).all() for t in poisoned.values())
    records = [json.loads(line) for line in (tmp_path / "poisoned" / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert len(record["rejected"]) == 1 and "NaN or Inf" in record["rejected"][0]["reason"]
        assert record["rejected"][0]["id"] not in {c["id"] for c in record["clients"]}
    assert json.loads((tmp_path / "poisoned" / "summary.json").read_text())["rejected_updates"] == 2


CORE_STRATEGIES = {"full", "gd", "rgd", "fim", "fim+gd"}  # full-rank uploads, covered by every other run


def _special_methods() -> list[str]:
    from fedhello.methods.base import METHODS

    return [
        name
        for name, method in METHODS.items()
        if "aggregation.name" in method.overrides or method.overrides.get("strategy.name") not in CORE_STRATEGIES
    ]


@pytest.mark.parametrize("method", _special_methods())
def test_honest_updates_of_every_method_are_accepted(method, fast_config, tmp_path):
    """No false rejections: rank-truncated (HetLoRA, FlexLoRA, LEGEND) and factor-frozen (FFA-LoRA) uploads
    match the shapes and keys their plans imply."""
    import json

    from fedhello.engines import ENGINES
    from fedhello.methods.base import method_config

    tree = fast_config.model_dump(mode="json")
    tree["federation"]["rounds"] = 1
    tree["output"]["save_adapter"] = False
    config = method_config(tree, method)
    ENGINES.get("local")().run(config, tmp_path / "run", show_progress=False)
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    # (some methods, e.g. `exclusive`, plan only part of the sampled clients: no client may be refused)
    assert record["rejected"] == [] and record["failed_clients"] == [] and record["clients"]


HONEST_SAMPLES = 10


def plus_minus_round(liar_claim: int) -> tuple[dict[int, Plan], list[ClientUpdate], dict[str, torch.Tensor]]:
    """Four honest clients move every value by +1 and report their 10 samples; client 5 moves it by -1
    and claims `liar_claim` samples."""
    state = {name: torch.zeros_like(t) for name, t in global_state().items()}
    plans = {cid: Plan((0,)) for cid in range(1, 6)}
    updates = [
        ClientUpdate(
            cid,
            plan,
            {n: state[n] + (1.0 if cid < 5 else -1.0) for n in expected_shapes(plan, state, LAYOUT)},
            num_samples=HONEST_SAMPLES if cid < 5 else liar_claim,
        )
        for cid, plan in plans.items()
    ]
    return plans, updates, state


def test_a_huge_sample_claim_cannot_own_a_samples_weighted_average():
    plans, updates, state = plus_minus_round(liar_claim=10**12)
    trained = (A0, B0, HEAD_W)
    # the attack is real: trusting the claim, the liar's -1 is the round's average
    trusting = UpdateValidator(LAYOUT, ReliabilityConfig(num_samples_bound=None))
    accepted, _ = trusting.split(plans, updates, state)
    assert float(masked_fedavg(state, accepted, "samples")[A0].mean()) < -0.99

    simulation = UpdateValidator(LAYOUT, ReliabilityConfig(), sample_counts=lambda cid: HONEST_SAMPLES)
    deployment = UpdateValidator(LAYOUT, ReliabilityConfig())  # no partition sizes: the median rule bounds claims
    for validator, reason in (
        (simulation, "num_samples: claims 1000000000000, the server's partition of this client holds 10"),
        (deployment, "num_samples: claims 1000000000000 > 10 x round median 10"),
    ):
        accepted, rejected = validator.split(plans, updates, state)
        assert [(r.client_id, r.reason) for r in rejected] == [(5, reason)]
        new = masked_fedavg(state, accepted, "samples")
        assert all(torch.equal(new[n], state[n] + 1.0) for n in trained), "the honest +1 stands"


def test_simulation_counts_are_exact_and_deployment_claims_are_capped():
    # with the server's counts, under-claiming (to hide) is refused too, and a client whose partition
    # really is 100x the others' is not an outlier
    plans, updates, state = plus_minus_round(liar_claim=HONEST_SAMPLES)
    counts = {1: 10, 2: 10, 3: 10, 4: 3, 5: 1000}
    updates[4].num_samples = 1000
    accepted, rejected = UpdateValidator(LAYOUT, ReliabilityConfig(), sample_counts=counts.__getitem__).split(
        plans, updates, state
    )
    assert [(r.client_id, r.reason) for r in rejected] == [
        (4, "num_samples: claims 10, the server's partition of this client holds 3")
    ]
    assert [u.client_id for u in accepted] == [1, 2, 3, 5]
    # deployment with two clients: no median to speak of, the absolute cap still holds
    two = {1: plans[1], 5: plans[5]}
    capped = UpdateValidator(LAYOUT, ReliabilityConfig(max_num_samples=500))
    accepted, rejected = capped.split(two, [updates[0], updates[4]], state)
    assert [u.client_id for u in accepted] == [1]
    assert [(r.client_id, r.reason) for r in rejected] == [
        (5, "num_samples: claims 1000, more than max_num_samples 500")
    ]


def test_the_local_engine_holds_claims_to_its_own_partition_sizes(fast_config, tmp_path, monkeypatch):
    import json

    from fedhello.engines import ENGINES
    from fedhello.methods.base import method_config
    from fedhello.training import LocalTrainer

    tree = fast_config.model_dump(mode="json")
    tree["federation"]["rounds"] = 2
    tree["output"]["save_adapter"] = False
    config = method_config(tree, "flexlora")
    liars: list[int] = []
    trained: list[int] = []

    def train(self, client_id, plan, state, data, seed, lr=None, **kwargs):  # noqa: ANN001, ANN003, ANN202 - a client that boasts
        update = LocalTrainer.train(self, client_id, plan, state, data, seed, lr=lr, **kwargs)
        trained.append(client_id)
        if len(trained) % config.federation.clients_per_round == 1:  # the first client of each round
            liars.append(client_id)
            update.num_samples = 10**12
        return update

    monkeypatch.setattr("fedhello.training.pool.LocalTrainer", type("Boasting", (LocalTrainer,), {"train": train}))
    ENGINES.get("local")().run(config, tmp_path / "run", show_progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [[r["id"] for r in record["rejected"]] for record in records] == [[liar] for liar in liars]
    for record in records:
        assert "the server's partition of this client holds" in record["rejected"][0]["reason"]
        assert len(record["clients"]) == config.federation.clients_per_round - 1


def empty_nodes_round(claims: list[int]) -> tuple[dict[int, Plan], list[ClientUpdate], dict[str, torch.Tensor]]:
    """One update per claim: a node that claims 0 samples trained nothing and sends the global state back;
    the others move every value by +1."""
    state = {name: torch.zeros_like(t) for name, t in global_state().items()}
    plans = {cid: Plan((0,)) for cid in range(1, len(claims) + 1)}
    updates = [
        ClientUpdate(
            cid,
            plan,
            {n: state[n] + (1.0 if claim else 0.0) for n in expected_shapes(plan, state, LAYOUT)},
            num_samples=claim,
        )
        for (cid, plan), claim in zip(plans.items(), claims, strict=True)
    ]
    return plans, updates, state


def test_a_round_of_mostly_empty_nodes_keeps_its_honest_updates():
    """Five nodes with empty data claim 0 samples and change nothing; a median over every claim (or change)
    would be 0 and refuse each of the three honest updates, leaving the empty ones to set the model."""
    plans, updates, state = empty_nodes_round([0, 0, 0, 0, 0, 40, 50, 60])
    for settings in (ReliabilityConfig(), ReliabilityConfig(norm_bound=5.0)):
        accepted, rejected = UpdateValidator(LAYOUT, settings).split(plans, updates, state)
        assert not rejected, rejected
        assert len(accepted) == len(updates)
    # the median of the positive claims (55) still refuses a boast
    plans, updates, state = empty_nodes_round([0, 0, 0, 0, 0, 40, 50, 60, 10**9])
    accepted, rejected = UpdateValidator(LAYOUT, ReliabilityConfig()).split(plans, updates, state)
    assert [(r.client_id, r.reason) for r in rejected] == [(9, "num_samples: claims 1000000000 > 10 x round median 55")]


def test_zero_sample_updates_carry_no_weight(fast_config):
    """With uniform weighting a node that trained nothing would pull the average back to the old model."""
    from fedhello.server import Coordinator, build_federation

    config = fast_config.model_copy(deep=True)
    config.aggregation.weighting = "uniform"
    coordinator = Coordinator(build_federation(config))
    state = {n: t.clone() for n, t in coordinator.global_state.items()}
    plan = Plan(tuple(range(4)))
    moved = ClientUpdate(1, plan, {n: t + 1.0 for n, t in state.items()}, num_samples=30)
    empty = ClientUpdate(2, plan, {n: t.clone() for n, t in state.items()}, num_samples=0)
    coordinator.aggregate([moved, empty], round_num=1)
    assert all(torch.equal(coordinator.global_state[n], state[n] + 1.0) for n in state)
    coordinator.aggregate([empty], round_num=2)  # nobody trained: nothing changes
    assert all(torch.equal(coordinator.global_state[n], state[n] + 1.0) for n in state)


def test_a_round_too_small_for_the_median_rules_says_so_in_its_record():
    """With fewer than 3 updates that claim samples nothing bounds a claim (10**9 samples beside 10 would own
    a samples-weighted average): the round's record and the console say so."""
    from fedhello.config import config_from_dict
    from fedhello.server.loop import collect_updates, round_record

    plans, updates, state = empty_nodes_round([0, 10, 10**9])
    config = config_from_dict({"federation": {"num_clients": 3, "clients_per_round": 3}})  # flower-deploy's rules

    def dispatch(round_num, sent, global_state):  # noqa: ANN001, ANN202
        return [u for u in updates if u.client_id in sent]

    validator = UpdateValidator(LAYOUT, config.reliability)
    with pytest.warns(UserWarning, match="round 1: num_samples_bound not applied: 2 update"):
        outcome = collect_updates(config, 1, plans, state, dispatch, validator)
    assert len(outcome.accepted) == 3
    (note,) = outcome.warnings
    assert "2 update(s) claim samples and a round median needs 3" in note and "max_num_samples (unset)" in note

    federation = SimpleNamespace(client_tiers={1: 0, 2: 0, 3: 0}, config=config)
    record = round_record(1, federation, outcome, 0, 0.0, None, False, False)
    assert record["warnings"] == [note]
    # where the server knows every partition size, claims are exact and there is nothing to say
    known = UpdateValidator(LAYOUT, config.reliability, sample_counts=lambda cid: updates[cid - 1].num_samples)
    assert known.unbounded(updates, state) == []


def test_a_self_pruned_pair_may_arrive_below_the_plans_rank():
    """With self-pruning on, a client sends a pruned pair as the rank-k adapter it is: accepted when both factors
    have the same rank k >= 1 and every other dimension is the plan's; refused otherwise, and always refused
    when clients cannot prune."""
    state = global_state()
    plan = Plan((0,), ranks={0: 4})
    pruned = honest(1, plan, state)
    pruned.tensors[A0], pruned.tensors[B0] = pruned.tensors[A0][:3], pruned.tensors[B0][:, :3]
    lopsided = honest(2, plan, state)
    lopsided.tensors[A0] = lopsided.tensors[A0][:3]
    wider = honest(3, plan, state)
    wider.tensors[A0], wider.tensors[B0] = torch.zeros(3, 9), wider.tensors[B0][:, :3]
    plans = {1: plan, 2: plan, 3: plan}
    accepted, rejected = UpdateValidator(LAYOUT, ReliabilityConfig(), pruned_ranks=True).split(
        plans, [pruned, lopsided, wider], state
    )
    assert [u.client_id for u in accepted] == [1]
    assert [(r.client_id, r.reason) for r in rejected] == [
        (2, f"{A0}: rank 3, its lora_B has rank 4"),
        (3, f"{A0}: shape [3, 9], expected [4, 8]"),
    ]
    _, rejected = UpdateValidator(LAYOUT, ReliabilityConfig()).split({1: plan}, [pruned], state)
    assert "shape [3, 8], expected [4, 8]" in rejected[0].reason
