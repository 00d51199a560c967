"""Tiny random checkpoints (ViT, GPT-2) and tiny data sets in the paper's hub schemas, written to disk so
the real loading paths (`from_pretrained`, `load_from_disk`, json files, the DomainNet folder layout) run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedhello.config import RunConfig, config_from_dict
from fedhello.tasks.causal_lm import render_prompt
from fedhello.testing.checkpoints import gpt2_checkpoint, vit_checkpoint
from fedhello.testing.datasets import cifar100_like, dolly_like, domainnet_folder, natural_instructions_like


@pytest.fixture(scope="session")
def tiny_vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return vit_checkpoint(
        tmp_path_factory.mktemp("tiny-vit"),
        num_labels=10,
        image_size=32,
        patch_size=8,
        hidden_size=32,
        layers=4,
        heads=2,
    )


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = " ".join(" ".join(row.values()) for row in dolly_like(192)) + " " + render_prompt("x", "y")
    words += " " + " ".join(" ".join(row.values()) for row in natural_instructions_like(120, tasks=12)["train"])
    return gpt2_checkpoint(
        tmp_path_factory.mktemp("tiny-gpt2"),
        hidden_size=32,
        layers=4,
        heads=2,
        positions=256,
        words=re.findall(r"\w+|[^\w\s]", words),
    )


@pytest.fixture(scope="session")
def tiny_cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-cifar100")
    cifar100_like(num_train=240, num_test=40, num_labels=10).save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_domainnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return domainnet_folder(tmp_path_factory.mktemp("tiny-domainnet"), per_class=8, classes=3)


@pytest.fixture(scope="session")
def tiny_dolly_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-dolly") / "databricks-dolly-15k.jsonl"
    dolly_like(192).to_json(str(path))
    return path


def base_tree(tmp_path: Path) -> dict:
    return {
        "name": "tiny",
        "seed": 3,
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "federation": {"num_clients": 6, "clients_per_round": 3, "rounds": 2, "eval_every": 1},
        "tiers": [{"share": "1/3", "layers": 1}, {"share": "1/3", "layers": 2}, {"share": "1/3", "layers": 4}],
        "strategy": {"name": "fim+gd", "fim_warmup": 1, "fim_every": 1},
        "train": {"batch_size": 8, "lr": 0.01},
        "output": {"dir": str(tmp_path / "runs"), "plot": False},
    }


@pytest.fixture
def vit_config(tiny_vit_dir: Path, tiny_cifar_dir: Path, tmp_path: Path) -> RunConfig:
    tree = base_tree(tmp_path)
    tree.update(
        task="image_classification",
        model={"name_or_path": str(tiny_vit_dir)},
        data={"source": "cifar100", "path": str(tiny_cifar_dir), "proxy_size": 8},
        partition={"kind": "pathological_dirichlet", "classes_per_client": 3, "alpha": 1.0, "min_size": 2},
    )
    tree["lora"]["target_modules"] = ["q_proj", "v_proj"]
    return config_from_dict(tree)


@pytest.fixture
def dolly_config(tiny_gpt2_dir: Path, tiny_dolly_file: Path, tmp_path: Path) -> RunConfig:
    tree = base_tree(tmp_path)
    tree.update(
        task="causal_lm",
        model={"name_or_path": str(tiny_gpt2_dir), "max_length": 64, "max_new_tokens": 6},
        data={
            "source": "dolly",
            "path": str(tiny_dolly_file),
            "label_column": "category",
            "proxy_size": 8,
            "test_size": 0.125,
            "max_generate_samples": 4,
        },
        partition={"kind": "domain", "domain_column": "labels"},
    )
    tree["lora"].update(target_modules=["c_attn"], head_modules=[])
    tree["federation"].update(num_clients=8, clients_per_round=2)
    return config_from_dict(tree)
