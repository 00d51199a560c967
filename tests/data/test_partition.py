import numpy as np
import pytest
from datasets import Dataset

from fedhello.config import PartitionConfig
from fedhello.data import PARTITIONERS, build_partitioner
from fedhello.errors import ConfigError


@pytest.fixture
def labelled():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=1000)
    return Dataset.from_dict({"idx": list(range(1000)), "labels": labels.tolist()})


def partitions(kind, dataset, n=10, **kwargs):
    partitioner = build_partitioner(PartitionConfig(kind=kind, **kwargs), n, "labels", seed=1)
    partitioner.dataset = dataset
    return [partitioner.load_partition(i) for i in range(n)]


@pytest.mark.parametrize(
    ("kind", "kwargs"), [("iid", {}), ("dirichlet", {"alpha": 0.5}), ("pathological", {"classes_per_client": 2})]
)
def test_cover_without_overlap(labelled, kind, kwargs):
    parts = partitions(kind, labelled, **kwargs)
    seen = [i for p in parts for i in p["idx"]]
    assert len(seen) == len(set(seen)), "a sample is in two partitions"
    assert set(seen) == set(range(1000)), "a sample is in no partition"


def test_iid_sizes_equal(labelled):
    sizes = [len(p) for p in partitions("iid", labelled)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pathological_class_count(labelled, k):
    for part in partitions("pathological", labelled, classes_per_client=k):
        assert len(set(part["labels"])) == k


def test_dirichlet_is_skewed_and_respects_min_size(labelled):
    parts = partitions("dirichlet", labelled, alpha=0.1, min_size=10)
    assert all(len(p) >= 10 for p in parts)
    shares = [np.bincount(p["labels"], minlength=5).max() / len(p) for p in parts]
    assert np.mean(shares) > 0.5  # alpha=0.1 concentrates each client on few classes


def test_unknown_partitioner():
    assert {"iid", "dirichlet", "pathological"} <= set(PARTITIONERS.names())
    with pytest.raises(ConfigError, match="partition.kind"):
        build_partitioner(PartitionConfig(kind="nope"), 3, "labels", 0)
