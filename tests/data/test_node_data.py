"""A SuperNode's own data: every supported layout, labels mapped by name to the run's ids, bad data refused."""

from __future__ import annotations

import pandas as pd
import pytest
from datasets import ClassLabel, Dataset
from flwr.common.config import parse_config_args

from fedhello.config import DataConfig
from fedhello.data.node import load_node_data, with_run_labels
from fedhello.engines import ENGINES
from fedhello.engines.flower.deploy import node_config
from fedhello.errors import ConfigError, FedHelloError
from fedhello.experiment import build_experiment, build_node_experiment

RUN_LABELS = ["tech", "sport", "music", "money"]  # deliberately not the alphabetical order of the files


def rows(labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"text": [f"text number {i} about {label}" for i, label in enumerate(labels)], "label": labels})


def ids_by_text(dataset: Dataset) -> dict[str, str]:
    names = dataset.features["label"].names
    return {text: names[label] for text, label in zip(dataset["text"], dataset["label"], strict=True)}


@pytest.mark.parametrize("suffix", ["csv", "json", "parquet"])
def test_data_files_are_labelled_by_the_runs_class_names(tmp_path, suffix):
    frame = rows(["sport", "money", "sport", "tech"])
    path = tmp_path / f"node.{suffix}"
    {
        "csv": lambda: frame.to_csv(path, index=False),
        "json": lambda: frame.to_json(path, orient="records", lines=False),
        "parquet": lambda: frame.to_parquet(path),
    }[suffix]()

    data = load_node_data(DataConfig(), str(path), RUN_LABELS)

    assert data.features["label"] == ClassLabel(names=RUN_LABELS)
    assert data["label"] == [RUN_LABELS.index(name) for name in frame["label"]]
    assert data["text"] == list(frame["text"])


def test_csv_with_other_columns_and_delimiter(tmp_path):
    path = tmp_path / "node.csv"
    path.write_text("body;topic\nfirst text;music\nsecond text;tech\n", encoding="latin-1")
    cfg = DataConfig(text_column="body", label_column="topic", csv_delimiter=";", encoding="latin-1")

    data = load_node_data(cfg, str(path), RUN_LABELS)

    assert data["body"] == ["first text", "second text"]
    assert data["topic"] == [RUN_LABELS.index("music"), RUN_LABELS.index("tech")]


def test_saved_data_set_with_its_own_label_order_keeps_every_split(tmp_path):
    names = sorted(RUN_LABELS)  # the saved set's own label order: money, music, sport, tech
    saved = Dataset.from_dict({"text": [f"t{i}" for i in range(12)], "label": [i % 4 for i in range(12)]})
    saved = saved.cast_column("label", ClassLabel(names=names))
    saved.train_test_split(test_size=0.25, seed=0).save_to_disk(str(tmp_path / "saved"))

    data = load_node_data(DataConfig(), str(tmp_path / "saved"), RUN_LABELS)

    assert len(data) == 12, "a node's rows are all training rows, whatever its splits"
    assert ids_by_text(data) == ids_by_text(saved), "each text keeps its class, under the run's ids"


def test_folder_of_class_folders(tmp_path):
    for label, texts in {"sport": ["a goal", "a match"], "tech": ["a chip"]}.items():
        (tmp_path / "corpus" / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (tmp_path / "corpus" / label / f"{i}.txt").write_text(text)

    data = load_node_data(DataConfig(), str(tmp_path / "corpus"), RUN_LABELS)

    assert ids_by_text(data) == {"a goal": "sport", "a match": "sport", "a chip": "tech"}


def test_an_unknown_label_is_refused_in_one_line_naming_the_file(tmp_path):
    path = tmp_path / "node.csv"
    rows(["sport", "weather"]).to_csv(path, index=False)
    with pytest.raises(FedHelloError, match=r"node data '.*node.csv': labels \['weather'\] are not among") as err:
        load_node_data(DataConfig(), str(path), RUN_LABELS)
    assert "\n" not in str(err.value)


def saved_with_unlabelled_rows(tmp_path) -> str:  # noqa: ANN001
    """A saved set in the run's own class order whose rows 1 and 3 carry the "no label" id -1."""
    saved = Dataset.from_dict({"text": ["t0", "t1", "t2", "t3", "t4"], "label": [0, -1, 1, -1, 3]})
    saved.cast_column("label", ClassLabel(names=RUN_LABELS)).save_to_disk(str(tmp_path / "saved"))
    return str(tmp_path / "saved")


def test_unlabelled_rows_are_refused_naming_the_file_and_the_switch(tmp_path):
    """-1 is datasets' "no label"; indexed into the class names it is the last class, so a node's unlabelled
    rows would train as 'money'. By default the file is refused in one line."""
    path = saved_with_unlabelled_rows(tmp_path)
    with pytest.raises(FedHelloError, match=r"node data '.*saved': 2 of 5 rows have no label .*first: row 1") as err:
        load_node_data(DataConfig(), path, RUN_LABELS)
    assert "\n" not in str(err.value) and "data.bad_labels=drop" in str(err.value)


def test_bad_labels_drop_keeps_the_valid_rows_and_counts_the_others(tmp_path):
    path = saved_with_unlabelled_rows(tmp_path)
    with pytest.warns(UserWarning, match=r"saved': dropped 2 of 5 rows .*2 without a label, 0 with labels"):
        data = load_node_data(DataConfig(bad_labels="drop"), path, RUN_LABELS)
    assert ids_by_text(data) == {"t0": "tech", "t2": "sport", "t4": "money"}, "no unlabelled row became a class"

    csv = tmp_path / "node.csv"
    csv.write_text("text,label\na goal,sport\nno label,\nsunny,weather\na chip,tech\n")
    with pytest.raises(FedHelloError, match="1 of 4 rows have no label"):
        load_node_data(DataConfig(), str(csv), RUN_LABELS)
    with pytest.warns(UserWarning, match=r"dropped 2 of 4 rows .*1 without a label, 1 with labels \['weather'\]"):
        data = load_node_data(DataConfig(bad_labels="drop"), str(csv), RUN_LABELS)
    assert ids_by_text(data) == {"a goal": "sport", "a chip": "tech"}


def test_missing_node_data_names_the_node_config_key(tmp_path):
    with pytest.raises(FedHelloError, match="does not exist on this node .*data-path="):
        load_node_data(DataConfig(), str(tmp_path / "nothing.csv"), RUN_LABELS)


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("empty.csv", "", "is an empty file"),
        ("header.csv", "text,label\n\n", "holds a header line and no rows"),
        ("empty.jsonl", "\n", "holds no rows"),
    ],
)
def test_a_node_file_without_rows_is_refused_in_the_nodes_terms(tmp_path, name, content, says):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(FedHelloError) as refused:
        load_node_data(DataConfig(), str(path), RUN_LABELS)
    message = str(refused.value)
    assert message.startswith(f"node data '{path}' {says}") and "\n" not in message
    # neither the run config's field, nor the library's words, nor a hub hint for a node's own file
    for foreign in ("data.path", "hub", "generating the dataset", "corresponds to no data"):
        assert foreign not in message, foreign


def test_an_unreadable_node_file_names_the_node_config_key(tmp_path):
    path = tmp_path / "node.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(FedHelloError, match=r"\(--node-config data-path\): .* could not be read") as refused:
        load_node_data(DataConfig(), str(path), RUN_LABELS)
    assert "data.path" not in str(refused.value) and "hub" not in str(refused.value)


def test_run_label_names_recode_the_servers_splits_by_name(tiny_config):
    reference = build_experiment(tiny_config)
    config = tiny_config.model_copy(deep=True)
    config.data.label_names = list(reversed(reference.label_names))

    recoded = build_experiment(config)

    assert recoded.label_names == config.data.label_names
    flip = len(reference.label_names) - 1
    assert recoded.test["labels"] == [flip - label for label in reference.test["labels"]]
    config.data.label_names = ["money", "music", "sport"]  # "tech" is missing
    with pytest.raises(FedHelloError, match=r"data split 'train': labels \['tech'\] are not among"):
        build_experiment(config)


def test_node_experiment_reads_only_its_own_data(tiny_config, tmp_path):
    path = tmp_path / "node.csv"
    rows(["sport", "money", "money"]).to_csv(path, index=False)
    config = tiny_config.model_copy(deep=True)
    config.data.label_names = RUN_LABELS
    config.data.path = str(tmp_path / "not-there")  # the run's own source is never read on a node

    node = build_node_experiment(config, str(path))

    assert sorted(node.train["labels"]) == sorted([RUN_LABELS.index(n) for n in ("sport", "money", "money")])
    config.data.label_names = None
    with pytest.raises(FedHelloError, match="data.label_names"):
        build_node_experiment(config, str(path))


def test_with_run_labels_reads_plain_text_labels():
    data = Dataset.from_dict({"text": ["x", "y"], "label": ["money", "tech"]})
    assert with_run_labels(data, "label", RUN_LABELS, "here")["label"] == [3, 0]


def test_only_the_deploy_engine_serves_node_data(tiny_config, tmp_path):
    config = tiny_config.model_copy(deep=True)
    config.flower.node_data = True
    for engine in ("local", "flower-sim"):
        with pytest.raises(ConfigError, match="flower.node_data.*--engine flower-deploy"):
            ENGINES.get(engine)().run(config, tmp_path / engine, show_progress=False)


def test_node_config_is_read_back_by_flower():
    values = {"partition-id": 1, "num-partitions": 2, "data-path": "/srv/my data/node 1.csv"}
    assert parse_config_args([node_config(values)]) == values
