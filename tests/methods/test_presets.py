"""Method presets resolve to valid configs with registered parts, and the trainer honours their plans."""

import pytest
import torch

from fedhello.aggregation import AGGREGATORS
from fedhello.allocation import ALLOCATORS
from fedhello.errors import ConfigError
from fedhello.methods import METHODS, apply_method, method_config
from fedhello.models.ranks import lora_factor
from fedhello.plan import Plan
from fedhello.server import build_federation
from fedhello.training import LocalTrainer

REQUIRED = {
    "fedit",
    "straggler",
    "exclusive",
    "fedra",
    "hetlora",
    "flexlora",
    "ffa-lora",
    "legend",
    "rgd",
    "fim",
    "fed-hello",
    "gd-bottleneck",
    "gd-triangle",
    "gd-inverted_triangle",
    "gd-uniform",
}


def test_every_method_resolves_to_registered_allocator_and_aggregator(tiny_config):
    assert set(METHODS) >= REQUIRED
    tree = tiny_config.model_dump(mode="json")
    for name in METHODS:
        config = method_config(tree, name)
        assert config.strategy.name in ALLOCATORS and config.aggregation.name in AGGREGATORS
        if METHODS.get(name).adjust is None:  # the centralized reference changes the federation by design
            assert config.partition == tiny_config.partition and config.tiers == tiny_config.tiers  # shared set-up
    assert tree == tiny_config.model_dump(mode="json"), "apply_method must not modify its input"
    assert apply_method(tree, "hetlora")["aggregation"]["name"] == "hetlora"
    with pytest.raises(ConfigError, match="unknown method"):
        apply_method(tree, "nope")


@pytest.fixture
def tiny_trainer(tiny_config):
    federation = build_federation(tiny_config)
    trainer = LocalTrainer(federation.model, federation.task, federation.layout, tiny_config.train)
    state = {n: p.detach().clone() for n, p in federation.model.named_parameters() if n in federation.layout}
    # a non-zero B everywhere, so truncation visibly changes the forward pass
    state = {n: (torch.randn_like(t) * 0.1 if lora_factor(n) == "B" else t) for n, t in state.items()}
    return federation, trainer, state


def test_rank_plan_trains_a_rank_r_adapter_and_uploads_truncated_factors(tiny_trainer):
    federation, trainer, state = tiny_trainer
    plan = Plan((0, 1, 2, 3), ranks=dict.fromkeys(range(4), 2))
    update = trainer.train(0, plan, state, federation.client_data(0), seed=1)
    lora = {n: t for n, t in update.tensors.items() if lora_factor(n)}
    assert lora and all((t.shape[0] if lora_factor(n) == "A" else t.shape[1]) == 2 for n, t in lora.items())
    params = dict(federation.model.named_parameters())
    for name in lora:  # the components beyond rank 2 were zeroed and stayed zero through training
        beyond = params[name][2:] if lora_factor(name) == "A" else params[name][:, 2:]
        assert torch.all(beyond == 0)
        kept = params[name][:2] if lora_factor(name) == "A" else params[name][:, :2]
        assert torch.equal(kept.detach(), lora[name])
    full = trainer.train(0, Plan((0, 1, 2, 3)), state, federation.client_data(0), seed=1)
    assert update.num_bytes < full.num_bytes


def test_ffa_plan_leaves_a_at_its_init_and_does_not_send_it(tiny_trainer):
    federation, trainer, state = tiny_trainer
    update = trainer.train(0, Plan((0, 1, 2, 3), train_lora_a=False), state, federation.client_data(0), seed=1)
    assert not any(lora_factor(n) == "A" for n in update.tensors)
    assert any(lora_factor(n) == "B" for n in update.tensors)
    params = dict(federation.model.named_parameters())
    assert all(torch.equal(params[n].detach(), state[n]) for n in state if lora_factor(n) == "A")
    assert not any(params[n].requires_grad for n in state if lora_factor(n) == "A")


def test_run_method_option_applies_the_preset_and_set_still_wins():
    from typer.testing import CliRunner

    from fedhello.cli import app

    runner = CliRunner()
    result = runner.invoke(
        app,
        ["run", "configs/default.yaml", "--dry-run", "--method", "flexlora", "--set", "aggregation.weighting=uniform"],
    )
    assert result.exit_code == 0, result.output
    assert "name: tier_rank" in result.output and "name: flexlora" in result.output
    assert "weighting: uniform" in result.output
    bad = runner.invoke(app, ["run", "configs/default.yaml", "--dry-run", "--method", "nope"])
    assert bad.exit_code == 2 and "unknown method 'nope'" in bad.output


def test_centralized_takes_the_optimizer_steps_of_a_whole_round(tiny_config, tmp_path):
    import json

    from fedhello.engines import ENGINES

    tree = tiny_config.model_dump(mode="json")
    tree["train"]["max_steps"] = 2
    tree["federation"].update(rounds=2, clients_per_round=3)
    tree["partition"] = {"kind": "pathological", "classes_per_client": 1}
    central = method_config(tree, "centralized")
    assert (central.federation.num_clients, central.federation.clients_per_round) == (1, 1)
    assert central.partition.kind == "iid" and [t.layers for t in central.tiers] == [4]
    assert central.train.max_steps == 3 * 2 and central.federation.rounds == 2
    assert central.train.lr == pytest.approx(tiny_config.train.lr / 2)  # one model, a whole round of steps
    steps = {}
    for name, config in (("fedit", method_config(tree, "fedit")), ("centralized", central)):
        ENGINES.get("local")().run(config, tmp_path / name, show_progress=False)
        records = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        steps[name] = sum(c["steps"] for r in records for c in r["clients"])
    assert steps["centralized"] == steps["fedit"] == 2 * 3 * 2


def test_config_checks_do_not_depend_on_what_was_imported():
    """A fresh interpreter that imports only fedhello.config refuses an impossible pairing and validates a
    strategy's own options: the registries load the method folders themselves."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from fedhello.config import load_config\n"
        "from fedhello.errors import ConfigError\n"
        "assert 'fedhello.methods' not in sys.modules\n"
        "try:\n"
        "    load_config(None, ['strategy.name=legend', 'aggregation.name=fedavg'])\n"
        "except ConfigError as err:\n"
        "    print('refused:', err)\n"
        "print(type(load_config(None, ['strategy.name=hetlora', 'aggregation.name=hetlora']).strategy).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert "refused: config field 'aggregation.name'" in out and "rank-truncated" in out
    assert out.strip().endswith("HetLoRAOptions")


def test_a_method_is_one_folder():
    """Every method's strategy, options, client hook and (unless generic) aggregator are its folder's, a shared one
    of a mechanism package, or the base classes."""
    shared = ("fedhello.config", "fedhello.training.hooks", "fedhello.allocation.", "fedhello.aggregation.")
    for name in METHODS:
        if METHODS.get(name).adjust is not None:  # the centralized reference: FedIT's parts on another experiment
            continue
        config = method_config({}, name)
        allocator = ALLOCATORS.get(config.strategy.name)
        parts = [allocator, allocator.Options, allocator.client_hook, AGGREGATORS.get(config.aggregation.name)]
        modules = {part.__module__ for part in parts}
        assert any(m.startswith("fedhello.methods.") for m in modules), f"{name}: nothing of it in a method folder"
        assert all(m.startswith(("fedhello.methods.", *shared)) for m in modules), (name, modules)
