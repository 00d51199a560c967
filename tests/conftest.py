"""Shared fixtures: a tiny random BERT and a tiny keyword-labelled text data set, written to disk so the
real loading code paths (`from_pretrained`, `load_from_disk`) are exercised offline."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, Dataset
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from fedhello.config import RunConfig, config_from_dict
from fedhello.models.build import resolve_model_path

TOPICS = {
    "sport": "match goal team score player coach league",
    "tech": "computer software chip internet phone data code",
    "money": "bank market price stock profit trade shares",
    "music": "song band album concert guitar singer tour",
}
# Tiny models run fastest on one thread, and parallel test processes must not oversubscribe the cores.
torch.set_num_threads(1)

FILLER = ["the", "a", "of", "and", "to", "in", "is", "was", "for", "on", "with", "as", "by", "at", "from"]


def make_texts(n: int, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    names = sorted(TOPICS)
    texts, labels = [], []
    for i in range(n):
        label = i % len(names)
        words = TOPICS[names[label]].split()
        tokens = [rng.choice(words) for _ in range(4)] + [rng.choice(FILLER) for _ in range(6)]
        rng.shuffle(tokens)
        texts.append(" ".join(tokens))
        labels.append(label)
    return Dataset.from_dict({"text": texts, "label": labels}).cast_column("label", ClassLabel(names=names))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer, 32-wide random BERT with the MiniLM tokenizer, saved like a hub checkpoint."""
    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("embedded:all-MiniLM-L6-v2"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=4,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def exact_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    """Budget tests in exact arithmetic: no slack between a cost prediction and a budget (`cost.SLACK`)."""
    from fedhello.resources import cost

    monkeypatch.setattr(cost, "SLACK", dict.fromkeys(cost.SLACK, 0.0))


@pytest.fixture(scope="session")
def wide_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A 4-layer, 128-wide random BERT: one block's activations are megabytes, well above the memory meter's
    noise (for tests that compare measured peaks)."""
    path = tmp_path_factory.mktemp("wide-bert")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=AutoTokenizer.from_pretrained(tiny_model_dir).vocab_size,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=256,
        max_position_embeddings=64,
        num_labels=4,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-data")
    make_texts(400).save_to_disk(str(path))
    return path


@pytest.fixture
def tiny_config(tiny_model_dir: Path, tiny_data_dir: Path, tmp_path: Path) -> RunConfig:
    """A complete run config on the tiny model and data; tests override what they need."""
    return config_from_dict(
        {
            "name": "tiny",
            "seed": 3,
            "model": {"name_or_path": str(tiny_model_dir), "max_length": 16},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "data": {"source": "hf", "path": str(tiny_data_dir), "proxy_size": 16, "test_size": 0.25},
            "partition": {"kind": "iid"},
            "federation": {"num_clients": 6, "clients_per_round": 3, "rounds": 3, "eval_every": 1},
            "tiers": [{"share": "1/3", "layers": 1}, {"share": "1/3", "layers": 2}, {"share": "1/3", "layers": 4}],
            "strategy": {"name": "fim+gd", "fim_warmup": 1, "fim_every": 1},
            "train": {"batch_size": 8, "lr": 0.03},
            "output": {"dir": str(tmp_path / "runs")},
        }
    )
