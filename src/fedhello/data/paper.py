"""The paper's data sets (CIFAR-100, DomainNet, LEDGAR, Dolly-15K, Natural Instructions) and your own
instruction data (`instructions`).

Each source loads by hub name (`datasets.load_dataset`) unless `data.path` points at a local copy (a
`save_to_disk` folder, a csv/json/parquet file, or for DomainNet the official folder layout), and
normalises the columns to the configured names: `data.image_column` / `data.label_column` for images,
`data.text_column` for text, and `data.instruction_column` / `context_column` / `response_column` for
instructions. The label column always ends up a `ClassLabel`; for the instruction sets the "label" is the
natural group (Dolly category, NI task), which is what the partitioners split by.
"""

from __future__ import annotations

from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Image

from fedhello.config import DataConfig
from fedhello.data.sources import LABEL_COUNTS, SOURCES, data_name, encode_labels, is_saved, load_any, require_columns
from fedhello.errors import ConfigError

# Hub names used when `data.path` is not set. Local copies in the same schema work the same way.
HUB = {
    "cifar100": "uoft-cs/cifar100",
    "domainnet": "TNILab/DomainNet_FL",
    "ledgar": "coastalcph/lex_glue",
    "dolly": "databricks/databricks-dolly-15k",
    "natural_instructions": "Muennighoff/natural-instructions",
}
# Number of classes of each source, for `--dry-run` (no download). Instruction sets have no classes.
LABEL_COUNTS.update({"cifar100": 100, "domainnet": None, "ledgar": 100, "dolly": None, "natural_instructions": None})
LABEL_COUNTS["instructions"] = None
DOMAIN_COLUMN = "domain"
DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")


def _rename(dataset: Dataset, mapping: dict[str, str]) -> Dataset:
    """Rename columns that exist and differ from their target; drop clashing targets first."""
    for old, new in mapping.items():
        if old == new or old not in dataset.column_names:
            continue
        if new in dataset.column_names:
            dataset = dataset.remove_columns(new)
        dataset = dataset.rename_column(old, new)
    return dataset


def _with_test(splits: DatasetDict, cfg: DataConfig, seed: int, stratify: str | None) -> DatasetDict:
    """Keep the official test split; otherwise hold out `data.test_size`, stratified when possible."""
    if "test" in splits:
        return DatasetDict({"train": splits["train"], "test": splits["test"]})
    train = splits["train"]
    try:
        return train.train_test_split(test_size=cfg.test_size, seed=seed, stratify_by_column=stratify)
    except ValueError:  # a class with one sample cannot be stratified
        return train.train_test_split(test_size=cfg.test_size, seed=seed)


@SOURCES.register("cifar100")
def cifar100(cfg: DataConfig, seed: int) -> DatasetDict:
    """CIFAR-100 with the 100 fine labels (hub `uoft-cs/cifar100`: `img`, `fine_label`)."""
    splits = load_any(cfg, HUB["cifar100"])
    splits = DatasetDict(
        {
            k: _rename(v, {"img": cfg.image_column, "fine_label": cfg.label_column}).remove_columns(
                [c for c in ("coarse_label",) if c in v.column_names]
            )
            for k, v in splits.items()
        }
    )
    columns = {"data.image_column": cfg.image_column, "data.label_column": cfg.label_column}
    require_columns(splits["train"].column_names, columns, data_name(cfg, f"'{HUB['cifar100']}'"))
    return _with_test(encode_labels(splits, cfg.label_column, integer_ids=True), cfg, seed, cfg.label_column)


def read_domainnet_folder(root: Path, domain_column: str, cfg: DataConfig) -> DatasetDict:
    """The official DomainNet layout: `<root>/<domain>/<class>/*.jpg`, with the official
    `<domain>_train.txt` / `<domain>_test.txt` split files when present (lines `path label`)."""
    domains = [d for d in DOMAINNET_DOMAINS if (root / d).is_dir()]
    if not domains:
        raise ConfigError("data.path", f"no DomainNet domain folder in '{root}'", f"expected {DOMAINNET_DOMAINS}")
    classes = sorted({p.name for d in domains for p in (root / d).iterdir() if p.is_dir()})
    rows: dict[str, dict[str, list]] = {}
    for domain in domains:
        for split in ("train", "test"):
            listing = root / f"{domain}_{split}.txt"
            if listing.exists():
                files = [root / line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
            elif split == "train":
                files = sorted((root / domain).glob("*/*"))
            else:
                continue
            bucket = rows.setdefault(split, {cfg.image_column: [], cfg.label_column: [], domain_column: []})
            for file in files:
                bucket[cfg.image_column].append(str(file))
                bucket[cfg.label_column].append(classes.index(file.parent.name))
                bucket[domain_column].append(domain)
    features = {cfg.label_column: ClassLabel(names=classes)}
    out = DatasetDict()
    for split, columns in rows.items():
        data = Dataset.from_dict(columns).cast_column(cfg.label_column, features[cfg.label_column])
        out[split] = data.cast_column(cfg.image_column, Image())
    return out


@SOURCES.register("domainnet")
def domainnet(cfg: DataConfig, seed: int) -> DatasetDict:
    """DomainNet: images of the same classes drawn from six domains (feature skew). `data.path` may be
    the official folder layout, a saved data set, or a hub name with image, label and `domain` columns
    (the column `partition.kind: domain` splits by, `partition.domain_column`'s default)."""
    domain_column = DOMAIN_COLUMN
    root = Path(cfg.path) if cfg.path else None
    if root is not None and root.is_dir() and not is_saved(root):
        splits = read_domainnet_folder(root, domain_column, cfg)
    else:
        splits = load_any(cfg, HUB["domainnet"])
        splits = DatasetDict(
            {k: _rename(v, {"img": cfg.image_column, "y": cfg.label_column}) for k, v in splits.items()}
        )
    columns = {"data.image_column": cfg.image_column, "data.label_column": cfg.label_column}
    require_columns(splits["train"].column_names, columns, data_name(cfg, f"'{HUB['domainnet']}'"))
    if domain_column not in splits["train"].column_names:
        raise ConfigError(
            "data.path",
            f"column '{domain_column}' not in {splits['train'].column_names}",
            "DomainNet needs a 'domain' column (or the official folder layout)",
        )
    return _with_test(encode_labels(splits, cfg.label_column, integer_ids=True), cfg, seed, cfg.label_column)


@SOURCES.register("ledgar")
def ledgar(cfg: DataConfig, seed: int) -> DatasetDict:
    """LEDGAR contract provisions, 100 labels (hub `coastalcph/lex_glue`, subset `ledgar`)."""
    splits = load_any(cfg, HUB["ledgar"], subset="ledgar")
    columns = {"data.text_column": cfg.text_column, "data.label_column": cfg.label_column}
    require_columns(splits["train"].column_names, columns, data_name(cfg, f"'{HUB['ledgar']}'"))
    return _with_test(encode_labels(splits, cfg.label_column, integer_ids=True), cfg, seed, cfg.label_column)


def _instruction_columns(cfg: DataConfig) -> dict[str, str]:
    columns = {"data.instruction_column": cfg.instruction_column, "data.response_column": cfg.response_column}
    if cfg.context_column:
        columns["data.context_column"] = cfg.context_column
    return columns


def instruction_splits(splits: DatasetDict, cfg: DataConfig, seed: int, where: str) -> DatasetDict:
    """Instruction data with the configured columns, a label column only where the data have one (the group
    of a row, e.g. Dolly's category: what label-skew partitions split by; without it only `partition.kind: iid`
    or a domain partition can split the rows), and a test split (the data's own, else `data.test_size`)."""
    require_columns(splits["train"].column_names, _instruction_columns(cfg), where)
    if cfg.label_column not in splits["train"].column_names:
        return _with_test(splits, cfg, seed, None)
    return _with_test(encode_labels(splits, cfg.label_column, integer_ids=True), cfg, seed, cfg.label_column)


@SOURCES.register("instructions")
def instructions(cfg: DataConfig, seed: int) -> DatasetDict:
    """Your own instruction data for `task: causal_lm`: a csv/json(l)/parquet file, a `save_to_disk` folder or a
    hub name (`data.path`) with an instruction, an optional context and a response column
    (`data.instruction_column`, `context_column`, `response_column`), and optionally a label column that groups
    the rows. configs/own-instructions.yaml is an example."""
    if not cfg.path:
        raise ConfigError(
            "data.path", "missing for source=instructions", "set it to your csv/json(l) file, e.g. data/train.jsonl"
        )
    return instruction_splits(load_any(cfg, cfg.path), cfg, seed, data_name(cfg))


@SOURCES.register("dolly")
def dolly(cfg: DataConfig, seed: int) -> DatasetDict:
    """Dolly-15K (instruction, context, response, category); the category is the label, so partitioning
    by it gives natural non-IID clients. A test split of `data.test_size` is held out per category."""
    splits = load_any(cfg, HUB["dolly"])
    splits = DatasetDict({k: _rename(v, {"category": cfg.label_column}) for k, v in splits.items()})
    return instruction_splits(splits, cfg, seed, data_name(cfg, f"'{HUB['dolly']}'"))


@SOURCES.register("natural_instructions")
def natural_instructions(cfg: DataConfig, seed: int) -> DatasetDict:
    """Natural Instructions (hub `Muennighoff/natural-instructions`: task_name, definition, inputs,
    targets). The task is the label, so `partition.kind: domain` gives a task-level partition."""
    splits = load_any(cfg, HUB["natural_instructions"])
    mapping = {
        "definition": cfg.instruction_column,
        "inputs": cfg.context_column or "context",
        "targets": cfg.response_column,
        "task_name": cfg.label_column,
    }
    splits = DatasetDict({k: _rename(v, mapping) for k, v in splits.items()})
    return instruction_splits(splits, cfg, seed, data_name(cfg, f"'{HUB['natural_instructions']}'"))
