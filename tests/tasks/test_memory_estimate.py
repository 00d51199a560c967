"""The analytic memory estimate (`fedhello.resources.estimate`) against reality: the weights of a really
loaded (and quantized) model, and a peak measured on a GPU; and the LLM preset's dry run, offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from fedhello.cli.dry_run import describe_plan
from fedhello.config import load_config
from fedhello.models import quantize
from fedhello.resources.estimate import model_shape, predict_tiers, training_terms, weights_mb

PRESET = Path("configs/paper/llama-1b-qlora.yaml")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="module")
def bf16_gpt2_dir(tiny_gpt2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny GPT-2 saved in bf16, as Llama-family checkpoints are."""
    path = tmp_path_factory.mktemp("tiny-gpt2-bf16")
    AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).to(torch.bfloat16).save_pretrained(path)
    return path


@pytest.mark.parametrize(("checkpoint", "precision"), [("fp32", "fp32"), ("bf16", "fp32"), ("bf16", "bf16")])
def test_weights_estimate_matches_the_loaded_model(checkpoint, precision, tiny_gpt2_dir, bf16_gpt2_dir):
    """Estimated MiB of the base weights vs `quantize.weights_mb` of the model loaded through bitsandbytes
    and prepared for k-bit training, as a client does. The estimate counts the same tensors with the same
    storage rules, so it agrees to the byte here; the 1 % tolerance only allows bitsandbytes to change
    per-layer bookkeeping (a scalar more or less per layer). A wrong rule is far outside it: nf4 absmax
    statistics are 3 % of the packed weights, the per-layer code tables 20 % of this tiny model, and the
    unquantized parameters double when k-bit preparation casts a bf16 checkpoint's to fp32."""
    path = tiny_gpt2_dir if checkpoint == "fp32" else bf16_gpt2_dir
    overrides = ["task=causal_lm", f"model.name_or_path={path}", "lora.target_modules=[c_attn]", "lora.head_modules=[]"]
    overrides.append(f"train.precision={precision}")  # bf16: a bf16 checkpoint's embeddings stay bf16
    config = load_config(None, overrides)
    shape = model_shape(config)
    estimated = {q: weights_mb(shape.weights, q, precision) for q in quantize.QUANTIZATIONS}
    for q in quantize.QUANTIZATIONS:
        kwargs = quantize.quantization_kwargs(config, q, torch.device("cpu"))
        model = quantize.prepare(AutoModelForCausalLM.from_pretrained(path, **kwargs), q, config.train.precision)
        assert estimated[q] == pytest.approx(quantize.weights_mb(model), rel=0.01), q
    assert estimated["nf4"] < estimated["int8"] < estimated["none"]


@pytest.mark.parametrize(("precision", "measured"), [("bf16", (6609, 6829, 7050)), ("fp32", (10613, 11057, 11501))])
def test_training_estimate_matches_the_h200_vit_measurement(precision, measured):
    """docs/paper.md, GPU smoke test: ViT-B/16 on one H200, 125 images per client (2,500 over 20 IID
    clients), tiers of 6/9/12 layers whose bottleneck plans all reach layer 0, peak training memory above
    the model per tier. The estimate was not fitted to these numbers and lands 1.2-1.5 % above them; 5 %
    leaves room for allocator rounding and workspaces of other torch versions, while a missing or doubled
    term (the MLP activation is 30 % of a block here, the LoRA inputs kept 7-12 % of a tier's peak) falls
    outside."""
    config = load_config("configs/paper/cifar100-iid.yaml", ["train.batch_size=125", f"train.precision={precision}"])
    shape = model_shape(config)
    cost = training_terms(shape, config, "none").cost_model()
    predicted = [cost.predict_counts(k, 0, shape.num_layers) for k in (6, 9, 12)]
    assert predicted == pytest.approx(measured, rel=0.05)


def memory_rows(text: str) -> dict[str, tuple[str, int, float, float]]:
    """Tier -> (quantization, layers, weights MiB, deepest total MiB) from the dry run's memory table (the
    quantization an auto tier picked is marked with '>')."""
    rows = {}
    pattern = r"^  (\d*)\s+(>?)(none|int8|nf4)\s+(\d+)/\d+\s+([\d,]+)\s+[\d,]+ / [\d,]+\s+[\d,]+ / ([\d,]+)"
    tier = ""
    for index, mark, quant, layers, weights, total in re.findall(pattern, text, flags=re.M):
        tier = index or tier
        if mark or tier not in rows:
            rows[tier] = (quant, int(layers), float(weights.replace(",", "")), float(total.replace(",", "")))
    return rows


def test_llm_preset_dry_run_predicts_each_tier_offline():
    """The preset sizes Llama 3.2 1B without the hub; its nf4 tier is predicted to fit a 6 GiB GPU with
    room for the CUDA context, and below the bf16 tier (weights and total)."""
    config = load_config(PRESET)
    text = describe_plan(config)
    assert "from fedhello's table of known architectures" in text
    rows = memory_rows(text)
    assert [rows[str(i)][0] for i in range(3)] == ["nf4", "none", "none"]  # the 8 GiB auto tier affords bf16
    assert "tier 1 quantization auto -> none" in text
    weak, strong = rows["0"], rows["2"]
    assert weak[2] < strong[2] and weak[3] < strong[3]
    assert weak[3] <= config.tiers[0].total_memory_mb <= 6144 - 1024


def test_auto_takes_the_most_depth_then_the_most_precise():
    """A budget that neither bf16 nor int8 weights meet with the tier's 12 layers goes to nf4 (and one they
    all meet to bf16: the preset test)."""
    config = load_config(PRESET)
    config.tiers[1].total_memory_mb = 3000
    auto = predict_tiers(model_shape(config), config)[1]
    assert {c.estimate.quantization: c.layers for c in auto.candidates} == {"none": None, "int8": None, "nf4": 12}
    assert auto.chosen.estimate.quantization == "nf4" and auto.chosen.total_mb(deepest=True) <= 3000


def test_the_16_bit_output_layer_terms_of_an_nf4_llama():
    """Llama 3.2 1B's tied 128,256 x 2,048 embeddings are 501 MiB in 16 bits, and they appear twice in the
    estimate. Weights: an nf4 client of the bf16 checkpoint training under bf16 autocast keeps them bf16
    (`quantize.prepare`): 501 MiB, where fp32 training holds them in fp32 (1,002 MiB). Training: were the output
    layer fp32 (an fp32 checkpoint), bf16 autocast would keep a 16-bit copy of it for backward, 501 MiB more
    at the logits moment. Dropping either term under-predicts a weak LLM client by half a GiB."""
    from dataclasses import replace

    from fedhello.resources.estimate import LOGIT_BYTES, MIB

    config = load_config(PRESET)  # bf16 autocast, batch 2 x 512 tokens
    shape = model_shape(config)
    vocab, hidden = shape.arch.vocab_size, shape.arch.hidden_size
    table = vocab * hidden * 2 / MIB
    assert table == pytest.approx(501.0)
    assert shape.weights.checkpoint_bytes == 2 and shape.weights.embedding_params == vocab * hidden

    fp32_training = config.model_copy(deep=True)
    fp32_training.train.precision = "fp32"
    held = weights_mb(shape.weights, "nf4", "bf16")
    assert weights_mb(shape.weights, "nf4", "fp32") - held == pytest.approx(table), "the embeddings, in 16 bits"
    assert 975 < held < 985, "docs/paper.md: 980 MiB of nf4 weights (479 nf4 linear layers + 501 bf16 embeddings)"

    tokens = config.train.batch_size * config.model.max_length
    logits = LOGIT_BYTES * tokens * vocab
    bf16_checkpoint = training_terms(shape, config, "nf4").base
    assert max(bf16_checkpoint.values()) == logits, "a 16-bit output layer needs no copy"
    fp32_checkpoint = replace(shape, weights=replace(shape.weights, checkpoint_bytes=4))
    base = training_terms(fp32_checkpoint, config, "nf4").base
    copy = max(base.values()) - logits
    assert copy / MIB == pytest.approx(table), "the 16-bit copy of an fp32 output layer"
    assert any("16-bit copy of the output layer" in term for term in base)
    without_autocast = training_terms(fp32_checkpoint, fp32_training, "nf4").base
    assert not any("16-bit copy" in term for term in without_autocast), "no autocast, no copy"
