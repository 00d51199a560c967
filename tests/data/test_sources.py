"""Data sources (`fedhello.data.sources`): one class list for every split, and a `data.path` is read or refused."""

from __future__ import annotations

import pytest
from datasets import Dataset, DatasetDict

from fedhello.config import DataConfig
from fedhello.data import load_source
from fedhello.data.sources import encode_labels
from fedhello.errors import ConfigError


def saved_splits(tmp_path, train: list, test: list) -> str:  # noqa: ANN001
    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"text": [f"train text {i}" for i in range(len(train))], "label": train}),
            "test": Dataset.from_dict({"text": [f"test text {i}" for i in range(len(test))], "label": test}),
        }
    )
    splits.save_to_disk(str(tmp_path / "saved"))
    return str(tmp_path / "saved")


def names_by_text(split: Dataset) -> dict[str, str]:
    names = split.features["label"].names
    return {text: names[label] for text, label in zip(split["text"], split["label"], strict=True)}


def test_a_test_split_without_a_class_keeps_the_training_ids(tmp_path):
    """Train holds business, sport and tech; test only sport and tech. Encoded split by split, 'sport' would
    be id 1 in train and id 0 in test, and the test accuracy would score the wrong classes."""
    path = saved_splits(tmp_path, ["business", "sport", "tech"] * 4, ["sport", "tech"] * 2)

    splits = load_source(DataConfig(source="hf", path=path), seed=0)

    names = ["business", "sport", "tech"]
    assert splits["train"].features["label"].names == names
    assert splits["test"].features["label"].names == names
    assert splits["test"]["label"] == [1, 2, 1, 2], "sport is id 1 and tech id 2 in every split"
    assert set(names_by_text(splits["test"]).values()) == {"sport", "tech"}


def test_integer_labels_get_one_class_list_too(tmp_path):
    path = saved_splits(tmp_path, [3, 5, 7, 3, 5, 7], [7, 7, 5])

    splits = load_source(DataConfig(source="hf", path=path), seed=0)

    assert splits["train"].features["label"].names == splits["test"].features["label"].names == ["3", "5", "7"]
    assert names_by_text(splits["test"]) == {"test text 0": "7", "test text 1": "7", "test text 2": "5"}


def test_the_papers_integer_ids_keep_their_value_in_every_split():
    splits = DatasetDict(
        {"train": Dataset.from_dict({"label": [0, 2, 4]}), "test": Dataset.from_dict({"label": [4, 4]})}
    )
    encoded = encode_labels(splits, "label", integer_ids=True)
    assert encoded["test"].features["label"].names == ["0", "1", "2", "3", "4"]
    assert encoded["test"]["label"] == [4, 4]


def test_a_path_the_source_would_ignore_is_refused(tmp_path):
    """bbc_news reads its shipped corpus: with `data.path` set it would train on BBC News while the run's
    config.yaml names the user's file. The path is refused before anything is read."""
    path = tmp_path / "mine.csv"
    path.write_text("text,label\nhello,a\nworld,b\n")
    with pytest.raises(ConfigError, match=r"'data.path': '.*mine.csv' is ignored by data.source 'bbc_news'") as err:
        load_source(DataConfig(source="bbc_news", path=str(path)), seed=0)
    assert "\n" not in str(err.value) and "fix: set data.source to hf" in str(err.value)
    # the sources that read a path still do
    assert load_source(DataConfig(source="hf", path=str(path), test_size=0.5), seed=0)["train"].num_rows == 1
