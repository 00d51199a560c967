"""`fedhello profile` per base-weight quantization on a tiny causal LM: one table per quantization, each with the
memory of the loaded weights, measured on the model loaded that way."""

from __future__ import annotations

import re

from fedhello.cli.profile import profile_command
from fedhello.config import config_from_dict
from fedhello.tasks.causal_lm import render_prompt
from fedhello.testing.checkpoints import gpt2_checkpoint
from fedhello.testing.datasets import dolly_like


def test_profile_prints_a_table_per_quantization(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDHELLO_CACHE", str(tmp_path / "cache"))
    rows = dolly_like(48)
    words = " ".join(" ".join(row.values()) for row in rows) + " " + render_prompt("x", "y")
    model = gpt2_checkpoint(
        tmp_path / "gpt2", hidden_size=128, layers=2, heads=2, positions=64, words=re.findall(r"\w+|[^\w\s]", words)
    )
    rows.to_json(str(tmp_path / "dolly.jsonl"))
    config = config_from_dict({
        "task": "causal_lm",
        "model": {"name_or_path": str(model), "max_length": 32},
        "lora": {"r": 4, "target_modules": ["c_attn"], "head_modules": []},
        "data": {"source": "dolly", "path": str(tmp_path / "dolly.jsonl"), "label_column": "category", "proxy_size": 4},
        "federation": {"num_clients": 2, "clients_per_round": 2},
        "tiers": [{"share": 0.5, "total_memory_mb": 400, "quantization": "auto"}, {"share": 0.5, "layers": 2}],
        "train": {"batch_size": 2},
    })
    heard: list[str] = []
    text = profile_command(config, steps=1, warmup=1, echo=heard.append)
    weights = {q: float(w) for q, w in re.findall(r"base weights (\w+): the loaded model holds ([\d.]+) MiB", text)}
    assert list(weights) == ["none", "int8", "nf4"]  # auto: every quantization, most precise first
    assert weights["nf4"] < weights["int8"] < weights["none"], weights
    assert text.count("peak memory = ") == 3 and text.count("total       = ") == 3
    assert any("profiling with the base weights in nf4" in line for line in heard)
    # a generous budget fits every layer in every quantization: auto keeps the most precise
    assert config.tiers[0].quantization == "none" and config.tiers[0].layers == 2
    assert "tier 0 (total_memory_mb 400) -> none" in text and "nf4   up to 2 layers, down to layer 0 (depth 2)" in text
