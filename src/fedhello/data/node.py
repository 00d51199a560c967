"""A SuperNode's own data (`flower.node_data`): one local file or folder, read with the run's `data:` fields
(columns, encoding, CSV layout) and labelled with the run's class names, so that every node maps a class to
the same label id whatever order its file lists them in.

Labels are matched by name (the text of the label column, or the names of a `ClassLabel`), never by position.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

from datasets import ClassLabel, Dataset, concatenate_datasets

from fedhello.config import DataConfig
from fedhello.data.sources import check_columns, is_saved, load_any, read_class_folders
from fedhello.errors import ConfigError, FedHelloError

NODE_DATA_KEY = "data-path"  # the SuperNode --node-config key naming the node's data
NODE_DATA_FIX = (
    f"start the SuperNode with --node-config '{NODE_DATA_KEY}=\"...\"' naming a csv/json/parquet file, a "
    "save_to_disk folder or a folder of class folders"
)


def _no_rows(location: Path) -> str | None:
    """Why the file at `location` holds no data rows (empty, or a CSV with only its header line), or None. Checked
    before the reading library, whose own words for these cases ("An error occurred while generating the dataset",
    'Instruction "train" corresponds to no data!') say nothing a node's operator can act on."""
    if not location.is_file():
        return None
    if location.stat().st_size == 0:
        return "is an empty file"
    if location.suffix == ".csv":
        with location.open("rb") as f:
            lines = [line for _, line in zip(range(2), (raw for raw in f if raw.strip()), strict=False)]
        if len(lines) < 2:
            return "holds a header line and no rows"
    return None


def node_reading_error(err: ConfigError, where: str) -> FedHelloError:
    """A reading failure as the node's operator must fix it: the node's file is its `--node-config data-path`,
    not the run config's `data.path` (other fields -- columns, encoding, CSV layout -- are the run config's)."""
    if err.field != "data.path":
        return FedHelloError(f"{where}: {err}")
    problem = err.problem
    if "corresponds to no data" in problem:  # a file the library reads as zero rows
        return FedHelloError(f"{where} holds no rows (fix: put the node's training rows in it)")
    return FedHelloError(f"{where} (--node-config {NODE_DATA_KEY}): {problem} (fix: {NODE_DATA_FIX})")


def _label_text(feature: object, value: object) -> str | None:
    """The class name of one label value, or None when the row has no label: an empty value, or an id outside
    a `ClassLabel`'s names (datasets write -1 for "no label")."""
    if value is None:
        return None
    if isinstance(feature, ClassLabel):
        return feature.names[value] if 0 <= value < len(feature.names) else None
    return str(value)


def with_run_labels(
    dataset: Dataset,
    column: str,
    label_names: list[str],
    where: str,
    bad_labels: Literal["refuse", "drop"] = "refuse",
) -> Dataset:
    """`dataset` with its label column re-coded to the ids of `label_names` (a `ClassLabel` with exactly those
    names). Rows without a label (empty, or the "no label" id -1) and rows whose label is not one of
    `label_names` are refused in one line naming `where`, or with `bad_labels="drop"` left out with a warning
    that counts them: never trained as some other class."""
    feature = dataset.features[column]
    names = [_label_text(feature, value) for value in dataset[column]]
    ids = {name: i for i, name in enumerate(label_names)}
    missing = [i for i, name in enumerate(names) if name is None]
    unknown = sorted({name for name in names if name is not None} - set(ids))
    drop_fix = "or set data.bad_labels=drop to train on the other rows"
    if bad_labels == "refuse" and missing:
        raise FedHelloError(
            f"{where}: {len(missing)} of {len(names)} rows have no label (empty, or the 'no label' id -1; first: "
            f"row {missing[0]}) (fix: label or remove those rows, {drop_fix})"
        )
    if bad_labels == "refuse" and unknown:
        raise FedHelloError(
            f"{where}: labels {unknown[:5]} are not among the run's classes {label_names} "
            f"(fix: relabel those rows, list the classes in data.label_names of the run config, {drop_fix})"
        )
    keep = [i for i, name in enumerate(names) if name in ids]
    if len(keep) < len(names):
        if not keep:
            raise FedHelloError(
                f"{where}: none of its {len(names)} rows has one of the run's classes {label_names} "
                "(fix: relabel the rows, or list their classes in data.label_names of the run config)"
            )
        warnings.warn(
            f"{where}: dropped {len(names) - len(keep)} of {len(names)} rows (data.bad_labels=drop): "
            f"{len(missing)} without a label, {len(names) - len(keep) - len(missing)} with labels {unknown[:5]} "
            "not among the run's classes",
            stacklevel=2,
        )
        dataset = dataset.select(keep)
        names = [names[i] for i in keep]
    recoded = dataset.remove_columns(column).add_column(column, [ids[name] for name in names])
    return recoded.cast_column(column, ClassLabel(names=list(label_names)))


def load_node_data(cfg: DataConfig, path: str, label_names: list[str]) -> Dataset:
    """Every row of the node's data at `path` -- a csv/json(l)/parquet file, a `save_to_disk` folder (all its
    splits) or a folder of class folders -- as training rows labelled by `label_names`. Rows without a usable
    label are refused or dropped by `data.bad_labels` (`with_run_labels`)."""
    location = Path(path).expanduser()
    where = f"node data '{path}'"
    if not location.exists():
        raise FedHelloError(f"{where} does not exist on this node (fix: {NODE_DATA_FIX})")
    if location.is_dir() and not is_saved(location):
        dataset = read_class_folders(location, cfg.encoding)
        dataset = dataset.rename_columns(
            {old: new for old, new in (("text", cfg.text_column), ("label", cfg.label_column)) if old != new}
        )
        if len(dataset) == 0:
            raise FedHelloError(f"{where} holds no class folders of .txt files")
    else:
        empty = _no_rows(location)
        if empty:
            raise FedHelloError(f"{where} {empty} (fix: put the node's training rows in it)")
        node_cfg = cfg.model_copy(update={"path": str(location)})
        try:
            loaded = load_any(node_cfg, str(location))
            check_columns(loaded, node_cfg, require_labels=False)  # rows without a label: with_run_labels' rule
        except ConfigError as err:
            raise node_reading_error(err, where) from err
        dataset = concatenate_datasets(list(loaded.values()))  # a node's rows are all training rows
        if len(dataset) == 0:
            raise FedHelloError(f"{where} holds no rows (fix: put the node's training rows in it)")
    return with_run_labels(dataset, cfg.label_column, label_names, where, cfg.bad_labels)
