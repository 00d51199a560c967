"""The paper's sources (offline, on synthetic copies in the hub schemas) and its partitioners."""

from collections import Counter

import numpy as np
import pytest
from datasets import Dataset

from fedhello.config import DataConfig, PartitionConfig
from fedhello.data import build_partitioner, load_source
from fedhello.data.domain_partition import pathological_shares
from fedhello.errors import ConfigError
from fedhello.testing.datasets import dolly_like, ledgar_like, natural_instructions_like


@pytest.mark.parametrize("classes,alpha", [(20, 1.0), (10, 1.0), (5, 0.3)])
def test_pathological_shares_follow_the_paper_rule(classes, alpha):
    labels = np.repeat(np.arange(100), 500)  # CIFAR-100: 500 training images per class
    shares = pathological_shares(labels, 100, classes, alpha, 10, np.random.default_rng(0))
    flat = np.concatenate(shares)
    assert len(flat) == len(labels) and len(np.unique(flat)) == len(labels), "every sample exactly once"
    for share in shares:
        assert len(np.unique(labels[share])) == classes
        per_class = Counter(labels[share].tolist())
        assert min(per_class.values()) >= 10, "at least 10 samples per share"
    sizes = [len(s) for s in shares]
    assert np.std(sizes) > 0, "Dirichlet share sizes differ between clients"


def test_pathological_shares_are_seeded():
    labels = np.repeat(np.arange(10), 30)
    a = pathological_shares(labels, 8, 3, 1.0, 2, np.random.default_rng(5))
    b = pathological_shares(labels, 8, 3, 1.0, 2, np.random.default_rng(5))
    c = pathological_shares(labels, 8, 3, 1.0, 2, np.random.default_rng(6))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_pathological_dirichlet_partitioner_through_the_registry():
    data = Dataset.from_dict({"labels": [i % 10 for i in range(400)], "x": list(range(400))})
    cfg = PartitionConfig(kind="pathological_dirichlet", classes_per_client=2, alpha=1.0, min_size=3)
    partitioner = build_partitioner(cfg, 10, "labels", seed=1)
    partitioner.dataset = data
    seen = []
    for cid in range(10):
        part = partitioner.load_partition(cid)
        assert len(set(part["labels"])) == 2
        seen += part["x"]
    assert sorted(seen) == list(range(400))


def test_domain_partitioner_with_more_domains_than_clients():
    data = Dataset.from_dict({"task": [f"t{i % 9}" for i in range(90)]})
    partitioner = build_partitioner(PartitionConfig(kind="domain", domain_column="task"), 4, "labels", seed=0)
    partitioner.dataset = data
    owned = [set(partitioner.load_partition(c)["task"]) for c in range(4)]
    assert sorted(len(o) for o in owned) == [2, 2, 2, 3]
    assert set().union(*owned) == {f"t{i}" for i in range(9)} and sum(len(o) for o in owned) == 9


def test_domain_partitioner_names_a_missing_column():
    partitioner = build_partitioner(PartitionConfig(kind="domain"), 2, "labels", seed=0)
    partitioner.dataset = Dataset.from_dict({"labels": [0, 1]})
    with pytest.raises(ConfigError, match="partition.domain_column"):
        partitioner.load_partition(0)


def test_ledgar_keeps_official_test_split(tmp_path):
    ledgar_like(200).save_to_disk(str(tmp_path / "ledgar"))
    splits = load_source(DataConfig(source="ledgar", path=str(tmp_path / "ledgar")), seed=0)
    assert len(splits["train"]) == 200 and len(splits["test"]) == 50
    assert splits["train"].features["label"].num_classes == 100


def test_dolly_and_ni_string_groups_become_class_labels(tmp_path):
    dolly_like(80).to_json(str(tmp_path / "dolly.jsonl"))
    splits = load_source(DataConfig(source="dolly", path=str(tmp_path / "dolly.jsonl"), label_column="category"), 0)
    names = splits["train"].features["category"].names
    assert names == sorted(names) and len(names) == 8
    assert Counter(splits["test"]["category"]) == Counter({c: 2 for c in range(8)}), "test split stratified"
    natural_instructions_like(60, tasks=5).save_to_disk(str(tmp_path / "ni"))
    cfg = DataConfig(source="natural_instructions", path=str(tmp_path / "ni"), label_column="task")
    ni = load_source(cfg, 0)
    assert {"instruction", "context", "response", "task"} <= set(ni["train"].column_names)
    assert ni["train"].features["task"].num_classes == 5


def test_hub_names_fail_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="hub is offline"):
        load_source(DataConfig(source="cifar100"), seed=0)
    with pytest.raises(ConfigError, match="data.path"):
        load_source(DataConfig(source="dolly", path="/nonexistent/dolly.jsonl"), seed=0)
