"""Synthetic stand-ins for the paper's data sets, in their exact hub schemas.

Used by the tests (which exercise the real loading code on them) and by `scripts/gpu-smoke.sh` on a
machine without hub access. They carry no signal worth learning beyond a weak colour cue per class for
images and a fixed reply per category for instructions, so a smoke run can see the loss move.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, Value
from PIL import Image as PILImage

from fedhello.data.paper import DOMAINNET_DOMAINS

DOLLY_CATEGORIES = (
    "brainstorming",
    "classification",
    "closed_qa",
    "creative_writing",
    "general_qa",
    "information_extraction",
    "open_qa",
    "summarization",
)


def _image(rng: np.random.Generator, label: int, num_labels: int, size: int) -> PILImage.Image:
    hue = np.array([label % 7, (label * 3) % 11, (label * 5) % 13], dtype=np.float32)
    base = (hue / [6, 10, 12] * 200).astype(np.uint8)
    noise = rng.integers(0, 56, (size, size, 3), dtype=np.uint8)
    return PILImage.fromarray(base[None, None, :] + noise)


def cifar100_like(num_train: int, num_test: int, num_labels: int = 100, size: int = 32, seed: int = 0) -> DatasetDict:
    """Columns `img` (PNG), `fine_label`, `coarse_label`, as `uoft-cs/cifar100`."""
    rng = np.random.default_rng(seed)
    features = Features(
        {
            "img": Image(),
            "fine_label": ClassLabel(names=[f"class_{i}" for i in range(num_labels)]),
            "coarse_label": Value("int64"),
        }
    )

    def split(n: int) -> Dataset:
        labels = [i % num_labels for i in range(n)]
        return Dataset.from_dict(
            {
                "img": [_image(rng, y, num_labels, size) for y in labels],
                "fine_label": labels,
                "coarse_label": [y // 5 for y in labels],
            },
            features=features,
        )

    return DatasetDict({"train": split(num_train), "test": split(num_test)})


def domainnet_folder(root: Path, per_class: int, classes: int = 3, size: int = 24, seed: int = 0) -> Path:
    """The official DomainNet layout `<root>/<domain>/<class>/*.jpg` with `<domain>_{train,test}.txt`."""
    rng = np.random.default_rng(seed)
    for domain in DOMAINNET_DOMAINS:
        lines: dict[str, list[str]] = {"train": [], "test": []}
        for label in range(classes):
            folder = root / domain / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                file = folder / f"{domain}_{label}_{i}.jpg"
                _image(rng, label, classes, size).save(file)
                lines["test" if i % 4 == 0 else "train"].append(f"{domain}/class_{label}/{file.name} {label}")
        for split, rows in lines.items():
            (root / f"{domain}_{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def dolly_like(n: int, seed: int = 0) -> Dataset:
    """Columns `instruction`, `context`, `response`, `category`, as `databricks/databricks-dolly-15k`."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[str]] = {"instruction": [], "context": [], "response": [], "category": []}
    for i in range(n):
        category = DOLLY_CATEGORIES[i % len(DOLLY_CATEGORIES)]
        topic = ["river", "city", "music", "bread", "planet"][int(rng.integers(5))]
        rows["instruction"].append(f"Answer a {category.replace('_', ' ')} question about the {topic}.")
        rows["context"].append(f"The {topic} is described here." if i % 2 else "")
        rows["response"].append(f"this is a {category.replace('_', ' ')} answer about the {topic}")
        rows["category"].append(category)
    return Dataset.from_dict(rows)


def natural_instructions_like(n: int, tasks: int = 6, seed: int = 0) -> DatasetDict:
    """Columns `task_name`, `id`, `definition`, `inputs`, `targets`, as `Muennighoff/natural-instructions`."""
    rng = np.random.default_rng(seed)

    def split(count: int, offset: int) -> Dataset:
        rows: dict[str, list[str]] = {"task_name": [], "id": [], "definition": [], "inputs": [], "targets": []}
        for i in range(count):
            task = i % tasks
            word = ["alpha", "beta", "gamma", "delta"][int(rng.integers(4))]
            rows["task_name"].append(f"task{task:03d}_synthetic")
            rows["id"].append(f"task{task:03d}-{offset + i}")
            rows["definition"].append(f"Task {task}: repeat the word with its task number.")
            rows["inputs"].append(f"Input: {word}")
            rows["targets"].append(f"{word} {task}")
        return Dataset.from_dict(rows)

    return DatasetDict({"train": split(n, 0), "test": split(max(n // 4, tasks), n)})


def ledgar_like(n: int, num_labels: int = 100, seed: int = 0) -> DatasetDict:
    """Columns `text`, `label` (ClassLabel of `num_labels`), as `coastalcph/lex_glue` / `ledgar`."""
    rng = np.random.default_rng(seed)
    words = ["agreement", "party", "shall", "law", "notice", "term", "payment", "clause", "governing"]
    feature = Features(
        {"text": Value("string"), "label": ClassLabel(names=[f"provision_{i}" for i in range(num_labels)])}
    )

    def split(count: int) -> Dataset:
        labels = [i % num_labels for i in range(count)]
        texts = [f"provision {y} " + " ".join(rng.choice(words, 8)) for y in labels]
        return Dataset.from_dict({"text": texts, "label": labels}, features=feature)

    return DatasetDict({"train": split(n), "validation": split(n // 4), "test": split(n // 4)})
