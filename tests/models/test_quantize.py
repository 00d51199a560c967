"""Quantized base weights: config checks, one federated round with nf4 / int8 / unquantized clients on a tiny
GPT-2 (bitsandbytes runs its 4- and 8-bit layers on CPU), the weights' memory, and the deferred import."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedhello.config import config_from_dict
from fedhello.engines import ENGINES
from fedhello.errors import ConfigError
from fedhello.models.quantize import check_available, weights_mb
from fedhello.runtime import defer_optional_imports
from fedhello.tasks.causal_lm import render_prompt
from fedhello.testing.checkpoints import gpt2_checkpoint
from fedhello.testing.datasets import dolly_like


@pytest.fixture(scope="module")
def weighty_gpt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A GPT-2 whose weights (49 MiB in fp32) outweigh the activations of its small batches, as an LLM's do."""
    root = tmp_path_factory.mktemp("weighty-gpt2")
    rows = dolly_like(96)
    words = " ".join(" ".join(row.values()) for row in rows) + " " + render_prompt("x", "y")
    model = gpt2_checkpoint(
        root / "model", hidden_size=512, layers=4, heads=4, positions=64, words=re.findall(r"\w+|[^\w\s]", words)
    )
    data = root / "dolly.jsonl"
    rows.to_json(str(data))
    return model, data


def quantized_tree(model: Path, data: Path, out: Path) -> dict:
    return {
        "name": "quantized",
        "seed": 2,
        "task": "causal_lm",
        "model": {"name_or_path": str(model), "max_length": 32, "max_new_tokens": 2},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["c_attn"], "head_modules": []},
        "data": {
            "source": "dolly", "path": str(data), "label_column": "category", "proxy_size": 4, "test_size": 0.1,
            "max_train_samples": 24, "max_test_samples": 4, "max_generate_samples": 1,
        },
        "partition": {"kind": "iid"},
        "federation": {"num_clients": 3, "clients_per_round": 3, "rounds": 1},
        # one client per tier, each tier loading its base weights its own way
        "tiers": [
            {"share": "1/3", "layers": 4, "quantization": "nf4"},
            {"share": "1/3", "layers": 4, "quantization": "int8"},
            {"share": "1/3", "layers": 4, "quantization": "none"},
        ],
        "strategy": {"name": "gd", "pattern": "inverted_triangle"},
        "train": {"batch_size": 2, "max_steps": 3, "lr": 0.01, "record_resources": True},
        "output": {"dir": str(out), "plot": False},
    }


def test_one_round_with_nf4_int8_and_unquantized_clients(weighty_gpt2, tmp_path):
    config = config_from_dict(quantized_tree(*weighty_gpt2, tmp_path))
    run_dir = tmp_path / "run"
    ENGINES.get("local")().run(config, run_dir, show_progress=False)
    (record,) = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    clients = {config.tiers[c["tier"]].quantization: c for c in record["clients"]}
    assert set(clients) == {"nf4", "int8", "none"}
    assert all(torch.isfinite(torch.tensor(c["train_loss"])) for c in clients.values())
    weights = {q: c["weights_mb"] for q, c in clients.items()}
    # 4-bit and 8-bit storage of the blocks' linear weights (embeddings and norms stay fp32)
    assert weights["nf4"] < weights["int8"] < 0.4 * weights["none"], weights
    # what a client must hold to train: the loaded weights plus the training peak, from the run's own records
    total = {q: c["total_mem_mb"] for q, c in clients.items()}
    assert total["nf4"] < total["none"] and total["int8"] < total["none"], total
    assert all(c["total_mem_mb"] == pytest.approx(c["weights_mb"] + c["peak_mem_mb"]) for c in clients.values())
    # the server aggregated full-precision LoRA factors whatever the clients' base weights
    adapter = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    assert adapter and all(t.dtype == torch.float32 for t in adapter.values())
    # the server's (unquantized) model evaluated the aggregate: a real, finite loss (None or NaN would fail)
    assert isinstance(record["loss"], float) and math.isfinite(record["loss"]) and record["loss"] > 0, record["loss"]


def test_quantization_settings_are_checked():
    with pytest.raises(ConfigError, match="model.quantization"):
        config_from_dict({"model": {"quantization": "fp8"}})
    with pytest.raises(ConfigError, match=r"tiers\.0.*total_memory_mb"):
        config_from_dict({"tiers": [{"share": 1, "layers": 2, "quantization": "auto"}]})
    config = config_from_dict({"tiers": [{"share": 1, "total_memory_mb": 500, "quantization": "auto"}]})
    assert config.tiers[0].has_budget


def test_a_missing_bitsandbytes_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes now raises ImportError
    with pytest.raises(ConfigError, match=r"model\.quantization.*nf4 needs the bitsandbytes package.*fedhello\[llm\]"):
        check_available("nf4")
    check_available("none")  # nothing to load


def test_weights_mb_counts_every_tensor_once():
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.LayerNorm(32))
    model.register_buffer("steps", torch.zeros(8, dtype=torch.int64))
    expected = (64 * 32 + 32 + 32 + 32) * 4 + 8 * 8
    assert weights_mb(model) == pytest.approx(expected / 2**20)
    tied = torch.nn.Sequential(torch.nn.Embedding(10, 4, _weight=torch.zeros(10, 4)))
    tied.head = torch.nn.Linear(4, 10, bias=False)
    tied.head.weight = tied[0].weight  # one storage, counted once
    assert weights_mb(tied) == pytest.approx(10 * 4 * 4 / 2**20)


def test_optional_imports_are_deferred_only_for_the_libraries_that_do_not_need_them():
    """peft.helpers' eager bitsandbytes import and seaborn's scipy import are refused (each costs every process
    most of a second); every other import of them is left alone."""
    finder = defer_optional_imports()
    from_peft_helpers: dict = {"__name__": "peft.helpers", "finder": finder}
    exec("spec = finder.find_spec('bitsandbytes')", from_peft_helpers)
    assert from_peft_helpers["spec"] is not None
    with pytest.raises(ImportError):
        finder.create_module(from_peft_helpers["spec"])
    assert finder.find_spec("bitsandbytes") is None  # anyone else: the normal finders
    assert finder.find_spec("peft") is None
    from_seaborn: dict = {"__name__": "seaborn._statistics", "finder": finder}  # its guarded KDE import of scipy
    exec("spec = finder.find_spec('scipy.stats')", from_seaborn)
    assert from_seaborn["spec"] is not None and finder.find_spec("scipy.stats") is None


def test_a_flower_node_may_load_its_own_quantization(weighty_gpt2, tmp_path):
    """A deployment node started with --node-config 'quantization=nf4' trains on an nf4 model whatever its
    client's tier says; without it, the tier decides. The adapter it trains is the same."""
    import bitsandbytes as bnb

    from fedhello.engines.flower.clientapp import Worker

    tree = quantized_tree(*weighty_gpt2, tmp_path)
    tree["tiers"] = [{"share": 1, "layers": 4}]  # the run loads none
    config = config_from_dict(tree)
    run_trainer, node_trainer = Worker(config, None).trainer(0), Worker(config, None, "nf4").trainer(0)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in run_trainer.model.modules())
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in node_trainer.model.modules())
    assert node_trainer.layout == run_trainer.layout
    with pytest.raises(ConfigError, match="node config 'quantization'.*unknown quantization 'fp8'"):
        Worker(config, None, "fp8")


def test_prepared_models_do_not_back_propagate_below_the_trained_layers(weighty_gpt2):
    """peft's default k-bit preparation hooks the embeddings so their output requires grad (for reentrant
    checkpointing); backward would then run through every block and freezing the lower layers would save
    nothing. fedhello prepares without it (the trainer's checkpointing is non-reentrant)."""
    from transformers import AutoModelForCausalLM

    from fedhello.models.quantize import prepare, quantization_kwargs

    config = config_from_dict(quantized_tree(*weighty_gpt2, Path("unused")))
    model = AutoModelForCausalLM.from_pretrained(
        weighty_gpt2[0], **quantization_kwargs(config, "nf4", torch.device("cpu"))
    )
    model = prepare(model, "nf4", config.train.precision)
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.get_input_embeddings()(torch.tensor([[1, 2, 3]])).requires_grad


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_a_quantized_classifier_keeps_its_head_and_lora_in_full_precision(tiny_config, quantization):
    """Every other quantized test is a causal LM without a head. A sequence classifier's head is trained in full
    and federated like a LoRA tensor: bitsandbytes must leave it (`lora.head_modules`) a plain fp32 linear layer,
    and the LoRA factors on the quantized base layers stay fp32 too, so clients of any quantization average
    the same tensors."""
    import bitsandbytes as bnb

    from fedhello.models.layers import HEAD, trainable_layout
    from fedhello.tasks import TASKS

    model = TASKS.get("text_classification")(tiny_config, num_labels=4).build_model(quantization)
    layer_type = bnb.nn.Linear4bit if quantization == "nf4" else bnb.nn.Linear8bitLt
    quantized = [name for name, module in model.named_modules() if isinstance(module, layer_type)]
    assert any(".attention.self.query" in name for name in quantized), "the base's linear layers are quantized"
    assert not any("classifier" in name for name in quantized), quantized
    heads = [m for name, m in model.named_modules() if name.endswith("classifier.modules_to_save.default")]
    assert heads and all(type(m) is torch.nn.Linear and m.weight.dtype == torch.float32 for m in heads)
    layout = trainable_layout(model.named_parameters())
    params = dict(model.named_parameters())
    assert any(layer == HEAD for layer in layout.values()) and any(".lora_A." in name for name in layout)
    assert all(params[name].dtype == torch.float32 for name in layout), "head and LoRA factors in fp32"
