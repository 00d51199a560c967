"""Config loading: defaults, overrides, and one-line errors that name the field and the fix."""

from pathlib import Path

import pytest
import yaml

from fedhello.config import RunConfig, config_from_dict, load_config, parse_override
from fedhello.errors import ConfigError


def test_defaults_are_valid():
    config = RunConfig()
    assert sum(t.share for t in config.tiers) == pytest.approx(1.0)


def test_every_shipped_config_loads():
    from pathlib import Path

    files = sorted(Path("configs").rglob("*.yaml"))
    assert files, "configs/ is empty"
    for path in files:
        if "lm_eval" in path.parts:  # lm-eval task YAMLs, not run configs (tests/tasks/test_lm_eval_scorer.py)
            continue
        if path.parent.name == "compare":  # comparison grids: a run config plus a compare: section
            from fedhello.compare import load_grid

            assert load_grid(path)
        else:
            load_config(path)


def test_fraction_shares_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("tiers:\n  - {share: 1/4, layers: 2}\n  - {share: 3/4, layers: 6}\n")
    config = load_config(path, ["train.lr=0.1", "strategy.name=gd", "federation.rounds=3", "lora.target_modules=[q,v]"])
    assert config.tiers[0].share == 0.25
    assert config.train.lr == 0.1 and config.strategy.name == "gd" and config.federation.rounds == 3
    assert config.lora.target_modules == ["q", "v"]


@pytest.mark.parametrize(
    ("tree", "field", "words"),
    [
        ({"trian": {}}, "trian", "unknown key"),
        ({"train": {"lr": "fast"}}, "train.lr", "number"),
        ({"train": {"lr": -1}}, "train.lr", "greater than 0"),
        ({"train": {"batch_size": 0}}, "train.batch_size", "greater than 0"),
        ({"tiers": [{"share": 0.5, "layers": 2}]}, "tiers", "sum to 0.5"),
        ({"tiers": [{"share": "a/b", "layers": 2}]}, "tiers.0.share", "fraction"),
        ({"tiers": [{"share": 1.0}]}, "tiers.0", "needs layers, memory_mb, memory_fraction, total_memory_mb or"),
        ({"federation": {"clients_per_round": 50}}, "federation.clients_per_round", "num_clients"),
        ({"strategy": {"pattern": "diamond"}}, "strategy.pattern", "bottleneck"),
        ({"aggregation": {"weighting": "votes"}}, "aggregation.weighting", "uniform"),
        ({"lora": {"dropout": 1.5}}, "lora.dropout", "less than 1"),
    ],
)
def test_bad_values_name_the_field(tree, field, words):
    with pytest.raises(ConfigError) as info:
        config_from_dict(tree)
    message = str(info.value)
    assert f"'{field}'" in message and words in message
    assert "\n" not in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_override_syntax():
    assert parse_override("a.b=3") == ("a.b", 3)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("a.b")


def test_base_files_merge(tmp_path):
    (tmp_path / "a.yaml").write_text("train: {lr: 0.1, batch_size: 4}\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain: {lr: 0.2}\n")
    config = load_config(tmp_path / "b.yaml")
    assert (config.train.lr, config.train.batch_size, config.name) == (0.2, 4, "a")
    (tmp_path / "c.yaml").write_text("base: c.yaml\n")
    with pytest.raises(ConfigError, match="includes itself"):
        load_config(tmp_path / "c.yaml")


def test_strategy_configs_select_their_strategy():
    from pathlib import Path

    for path in Path("configs/strategies").glob("*.yaml"):
        config = load_config(path)
        assert config.strategy.name in path.stem or path.stem.startswith(config.strategy.name)


@pytest.mark.parametrize("strategy", ["legend", "tier_rank"])
def test_rank_allocator_with_plain_fedavg_is_refused_at_load(strategy):
    """FedAvg of rank-truncated factors used to be accepted and broadcast a rank-r factor into the global one."""
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"strategy.name={strategy}"])  # aggregation.name stays the default, fedavg
    message = str(info.value)
    assert "'aggregation.name'" in message and "rank-truncated" in message and "\n" not in message
    assert all(name in message for name in ("hetlora", "flexlora", "rank_fedavg"))
    assert load_config(None, [f"strategy.name={strategy}", "aggregation.name=rank_fedavg"]).strategy.name == strategy


def test_every_strategy_aggregator_pair_is_decided_by_the_declarations():
    from fedhello.aggregation import AGGREGATORS
    from fedhello.allocation import ALLOCATORS

    for strategy in ALLOCATORS.names():
        for aggregation in AGGREGATORS.names():
            overrides = [f"strategy.name={strategy}", f"aggregation.name={aggregation}"]
            fits = ALLOCATORS.get(strategy).uploads <= AGGREGATORS.get(aggregation).accepts
            if fits:
                assert load_config(None, overrides).aggregation.name == aggregation
            else:
                with pytest.raises(ConfigError, match="'aggregation.name'"):
                    load_config(None, overrides)


def test_self_pruning_needs_a_rank_aware_aggregator():
    with pytest.raises(ConfigError, match="rank-truncated"):
        load_config(None, ["strategy.name=hetlora", "aggregation.name=fedavg", "strategy.self_prune_threshold=0.1"])
    hetlora = ["strategy.name=hetlora", "aggregation.name=hetlora"]
    config = load_config(None, [*hetlora, "strategy.self_prune_threshold=0.1"])
    assert config.strategy.sends_lower_ranks and config.strategy.rank_scaling == "per_rank"
    assert not load_config(None, [*hetlora, "strategy.self_prune_threshold=0"]).strategy.sends_lower_ranks


def test_a_strategy_switched_by_a_later_layer_drops_the_options_of_the_previous_one(tmp_path):
    """configs/fed-hello.yaml sets fim+gd's options; --set strategy.name=gd keeps only gd's (pattern), a method
    preset likewise; the same foreign option written beside the name it does not fit is an error."""
    assert load_config("configs/fed-hello.yaml", ["strategy.name=gd"]).strategy.model_dump() == {
        "name": "gd",
        "depth_aware": False,
        "recompute": False,
        "pattern": "bottleneck",
    }
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {Path('configs/fed-hello.yaml').resolve()}\nstrategy: {{name: fill}}\n")
    assert load_config(child).strategy.name == "fill"
    with pytest.raises(ConfigError, match=r"'strategy.pattern': not an option of strategy 'fill'"):
        load_config(child, ["strategy.pattern=uniform"])


def test_importance_strategy_without_proxy_data_is_refused_at_load():
    for strategy in ("fim", "fim+gd"):
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"strategy.name={strategy}", "data.proxy_size=0"])
        assert "'data.proxy_size'" in str(info.value) and "Fisher" in str(info.value)
    assert load_config(None, ["strategy.name=rgd", "data.proxy_size=0"]).data.proxy_size == 0


# ---- issue 23: a new user's first hour ----


@pytest.mark.parametrize(
    ("tree", "field", "nearest"),
    [
        ({"federaton": {"rounds": 3}}, "federaton", "federation"),
        ({"train": {"lrr": 0.1}}, "train.lrr", "train.lr"),
        ({"train": {"rounds": 3}}, "train.rounds", "federation.rounds"),  # the right name in the wrong section
        ({"tiers": [{"shar": 1.0, "layers": 2}]}, "tiers.0.shar", "tiers.0.share"),
    ],
)
def test_unknown_key_suggests_the_nearest_and_the_reference(tree, field, nearest):
    with pytest.raises(ConfigError) as info:
        config_from_dict(tree)
    assert str(info.value) == (
        f"config field '{field}': unknown key (fix: did you mean '{nearest}'? see docs/config.md or fedhello config)"
    )


def test_unknown_key_without_a_near_one_points_at_the_reference():
    with pytest.raises(ConfigError) as info:
        config_from_dict({"zzz": 1})
    assert str(info.value) == "config field 'zzz': unknown key (fix: remove it; see docs/config.md or fedhello config)"


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("tiers=[{share: 1/3", "option '--set': the value of 'tiers=[{share: 1/3' is not valid YAML (expected ','"),
        ("train.lr='x", "option '--set': the value of 'train.lr='x' is not valid YAML"),
        ("=5", "option '--set': '=5' has no key before '=' (fix: write key=value, e.g. --set train.lr=0.001)"),
    ],
)
def test_malformed_override_is_one_line_naming_it(override, words):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value).startswith(words) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=-0.01", "config field 'train.lr': Input should be greater than 0, got -0.01 (fix: set a value > 0)"),
        (
            "lora.dropout=1.5",
            "config field 'lora.dropout': Input should be less than 1, got 1.5 (fix: set a value < 1)",
        ),
        (
            "data.csv_quotechar=ab",
            "config field 'data.csv_quotechar': String should have at most 1 character, got "
            "'ab' (fix: give at most 1 character(s))",
        ),
        (
            "train.lr_schedule=linear",
            "config field 'train.lr_schedule': Input should be 'constant' or 'cosine', got "
            "'linear' (fix: use one of 'constant' or 'cosine')",
        ),
        (
            "data.encoding=latin-l",
            "config field 'data.encoding': not an encoding Python knows, got 'latin-l' (fix: "
            "use e.g. utf-8, latin-1 or cp1252)",
        ),
    ],
)
def test_a_bad_value_gets_a_real_fix(override, message):
    """The fix is what to write (the constraint), never just the value that was given."""
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == message


def test_an_item_of_tiers_can_be_overridden():
    config = load_config(Path("configs/default.yaml"), ["tiers.0.layers=1"])
    assert config.tiers[0].layers == 1
    with pytest.raises(ConfigError, match="use an index below"):
        load_config(Path("configs/default.yaml"), ["tiers.7.layers=1"])


def test_a_run_folder_written_before_methods_became_folders_still_loads(tmp_path):
    """Older versions saved every strategy option and HetLoRA's LoRA fields in every run's config.yaml: such a
    file loads as a run folder's own config (resume, export, a grid's finished cells), not as a user's config,
    and a moved field set to something else names its new place."""
    tree = load_config(None, ["strategy.name=full"]).model_dump(mode="json")
    tree["strategy"].update(pattern="bottleneck", randomized=True, fim_warmup=5, value_decay=0.5)
    tree["lora"].update(rank_scaling="fixed", self_prune_threshold=0.0, self_prune_ratio=0.75)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tree))
    assert load_config(path, saved=True).strategy.model_dump() == {"name": "full", "depth_aware": False,
                                                                  "recompute": False}
    with pytest.raises(ConfigError):
        load_config(path)
    tree["lora"]["rank_scaling"] = "per_rank"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ConfigError, match=r"'lora.rank_scaling': moved to strategy.rank_scaling"):
        load_config(path, saved=True)
