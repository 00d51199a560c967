"""A SuperNode's own data (`flower.node_data`): one local file or folder, read with the run's `data:` fields
(columns, encoding, CSV layout) and labelled with the run's class names, so that every node maps a class to
the same label id whatever order its file lists them in.

Labels are matched by name (the text of the label column, or the names of a `ClassLabel`), never by position.
"""

from __future__ import annotations

from pathlib import Path

from datasets import ClassLabel, Dataset, concatenate_datasets

from fedhello.config import DataConfig
from fedhello.data.sources import check_columns, is_saved, load_any, read_class_folders
from fedhello.errors import FedHelloError

NODE_DATA_KEY = "data-path"  # the SuperNode --node-config key naming the node's data


def with_run_labels(dataset: Dataset, column: str, label_names: list[str], where: str) -> Dataset:
    """`dataset` with its label column re-coded to the ids of `label_names` (a `ClassLabel` with exactly those
    names). A label that is not one of them is refused in one line naming `where`."""
    feature = dataset.features[column]
    values = dataset[column]
    names = [feature.names[v] for v in values] if isinstance(feature, ClassLabel) else [str(v) for v in values]
    unknown = sorted(set(names) - set(label_names))
    if unknown:
        raise FedHelloError(
            f"{where}: labels {unknown[:5]} are not among the run's classes {label_names} "
            "(fix: relabel those rows, or list the classes in data.label_names of the run config)"
        )
    ids = {name: i for i, name in enumerate(label_names)}
    recoded = dataset.remove_columns(column).add_column(column, [ids[name] for name in names])
    return recoded.cast_column(column, ClassLabel(names=list(label_names)))


def load_node_data(cfg: DataConfig, path: str, label_names: list[str]) -> Dataset:
    """Every row of the node's data at `path` -- a csv/json(l)/parquet file, a `save_to_disk` folder (all its
    splits) or a folder of class folders -- as training rows labelled by `label_names`."""
    location = Path(path).expanduser()
    where = f"node data '{path}'"
    if not location.exists():
        raise FedHelloError(
            f"{where} does not exist on this node (fix: start the SuperNode with --node-config "
            f"'{NODE_DATA_KEY}=...' naming a csv/json/parquet file, a save_to_disk folder or a folder of class folders)"
        )
    if location.is_dir() and not is_saved(location):
        dataset = read_class_folders(location, cfg.encoding)
        dataset = dataset.rename_columns(
            {old: new for old, new in (("text", cfg.text_column), ("label", cfg.label_column)) if old != new}
        )
        if len(dataset) == 0:
            raise FedHelloError(f"{where} holds no class folders of .txt files")
    else:
        loaded = load_any(cfg.model_copy(update={"path": str(location)}), str(location))
        check_columns(loaded, cfg)
        dataset = concatenate_datasets(list(loaded.values()))  # a node's rows are all training rows
    return with_run_labels(dataset, cfg.label_column, label_names, where)
