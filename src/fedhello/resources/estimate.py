"""Analytic memory estimate of a client, computed offline from the architecture (no weights, no device).

This is an *estimate* for planning (`fedhello run --dry-run`), not a measurement: the measured profile
(`fedhello profile`, `fedhello.resources.profile`) is what budget tiers use at run time. It has the same
two parts as the measured path, per base-weight quantization q (none / int8 / nf4):

    total(S, q) = weights_mb(q) + training(S, q)

**Weights** (`weights_mb`), from the parameter counts of the model built on PyTorch's meta device
(`fedhello.models.architectures.BaseWeights`). Quantized are the linear layers bitsandbytes replaces
(transformers' own skip rule: the task head `lora.head_modules`, else `lm_head` / tied embeddings):

- none: every parameter in the checkpoint's dtype (config `dtype`: bf16 for Llama 3.2, fp32 when unset);
- int8 (LLM.int8): 1 byte per weight + one fp32 scale per output row;
- nf4 with double quantization (QLoRA): 0.5 byte per weight + one uint8 absmax per block of 64 weights,
  one fp32 absmax per 256 blocks, and the two code tables bitsandbytes keeps per layer (16 + 256 fp32);
- int8 / nf4: everything left unquantized (norms, biases, head) in fp32, because peft's k-bit preparation
  casts fp16/bf16 parameters to fp32 before training; the input/output embeddings of a 16-bit checkpoint
  trained under 16-bit autocast stay 16-bit (`fedhello.models.quantize.prepare`: for an nf4 Llama 3.2 1B
  that is 501 MiB of bf16 embeddings instead of 1,002 MiB in fp32, beside 479 MiB of nf4 linear layers).

Buffers count as they are. LoRA factors are not in this term: they are counted with their training state.

**Training** memory (`training`) is a `CostModel` of the same linear form the profile fits, so the same
budget code applies (`fedhello.resources.cost`):

    training(S) = base + per_depth * depth(S) + per_layer * |S|          (MiB)

with depth(S) = blocks from the lowest trained layer to the output (backward stops there), T = s * b
tokens per micro-batch (s = `model.max_length`, or the patches of a ViT, b = `train.batch_size`), h the
hidden size, i the MLP width, a the attention heads, V the vocabulary:

- **per_depth**, activations autograd keeps for backward per traversed block. Adapted from the per-layer
  count of Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models"),
  s*b*h*(34 + 5*a*s/h) bytes at 16 bits for *full* training. With frozen base weights the inputs of the
  frozen linear layers are not kept (they are needed only for weight gradients), so of the 34 s*b*h only
  the norm inputs, the attention inputs and the MLP activation inputs remain, plus dropout masks:
    norm inputs             2 * T*h * 4            (LayerNorm/RMSNorm compute in fp32)
    attention, GPU          4 * T*h * p_attn       (Q, K, V, output: SDPA's fused kernels, no s^2 term)
    attention, CPU          (3 * T*h + a*s^2*b * (1, or 3 with attention dropout)) * 4 (p_attn without
                            autocast): Q, K, V; softmax output, dropout mask and output (CPU autocast
                            leaves attention in fp32)
    MLP activation          m * T*i * p_act        (m = 1 GELU, 4 GPT-2's tanh GELU, 3 SwiGLU)
    dropout masks           T*h per hidden dropout, T*(LoRA input widths) with LoRA dropout: 1 byte on a
                            GPU, the input's bytes on CPU (PyTorch's CPU dropout keeps a noise tensor)
    fp32 weights + 16-bit   the 16-bit copy autocast makes of every frozen linear weight (backward keeps it)
    int8                    T*(3h*4 + i*p_act)     (bitsandbytes' int8 matmul keeps its input)
  p_attn = 2 under bf16/fp16 autocast, else the weights' bytes; p_act = 4 for int8/nf4 (prepared models
  run an fp32 residual stream and bitsandbytes returns its input dtype; on CPU its int8 matmul is a plain
  linear under autocast, so p_attn), else p_attn.
  With `gradient_checkpointing` only each block's input is kept (T*h * residual bytes); one block's
  activations come back during its own backward (see base).
- **per_layer**, per trained layer: its LoRA parameters * 16 bytes (fp32 parameter, gradient and two
  AdamW states), plus the inputs its LoRA branches keep for their weight gradients (T * LoRA input widths
  * p, and the r-wide outputs of lora_A), unless checkpointing recomputes them.
- **base**, the larger of two moments of backward, plus fixed terms. Its start: for causal LMs the logits
  dominate (12 * T*V bytes: transformers' loss upcasts them to fp32; the fp32 log-softmax output, its
  gradient and the logits' gradient are live), and under 16-bit autocast an fp32 output layer (fp32
  checkpoints, and every k-bit prepared model) adds the V*h*2-byte 16-bit copy its backward keeps. One
  block's own backward: its transient gradients (2 * T*i * p_act + 2 * T*h * 4), with checkpointing plus
  its recomputed activations. Fixed: the head's parameters * 16 bytes, the 4-D attention mask of text
  models (b*s^2 bytes) and a 32 MiB allowance for library workspaces (cuBLAS keeps up to 32 MiB).

How close it comes to measured peaks, and on which models it was checked: docs/benchmarks.md ("The analytic
estimate against measurements"), with the command that measures it (`benchmarks/estimate_vs_measured.py`).

Not counted (keep headroom for them): the CUDA context (about 0.3-0.6 GiB per process), allocator
fragmentation, and data/tokenizer memory on the host. Sequences are taken at `model.max_length`; batches
padded to a shorter longest sample use less.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedhello.config import RunConfig, TierConfig
from fedhello.data import count_labels
from fedhello.models.architectures import BaseWeights, ModelShape, lora_shape
from fedhello.models.quantize import QUANTIZATIONS
from fedhello.resources.cost import BudgetError, CostModel, budget_constraint
from fedhello.tasks import TASKS

MIB = 2**20
FIXED_MB = 32.0  # library workspaces (cuBLAS keeps up to 32 MiB on Hopper); an allowance, not a measurement
LOGIT_BYTES = 12  # per logit: fp32 log-softmax output + its gradient + the gradient of the logits
ADAMW_BYTES = 16  # per trained parameter: fp32 value, gradient, exp_avg, exp_avg_sq
NF4_BLOCK, NF4_NESTED_BLOCK = 64, 256
NF4_CODES_BYTES = (16 + 256) * 4  # the NF4 code and the nested absmax code, fp32, kept per layer
_GATED = {"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "olmo2"}


def model_shape(config: RunConfig) -> ModelShape:
    """Per-layer and head LoRA parameter counts of the configured model and task."""
    return lora_shape(config, TASKS.get(config.task).auto_model_class, count_labels(config.data))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def weights_mb(weights: BaseWeights, quantization: str, precision: str = "fp32") -> float:
    """MiB of the loaded base model at `quantization` under `train.precision` (see the module docstring for
    the storage rules)."""
    ckpt = weights.checkpoint_bytes
    # k-bit preparation casts unquantized parameters to fp32, except the embeddings of a 16-bit checkpoint
    # trained under 16-bit autocast (fedhello.models.quantize.prepare)
    kept = ckpt if precision in ("bf16", "fp16") and ckpt == 2 else 4
    prepared_other = (weights.other_params - weights.embedding_params) * 4 + weights.embedding_params * kept
    if quantization == "none":
        linear = sum(n for n, _ in weights.quantized) * ckpt
        other = weights.other_params * ckpt
    elif quantization == "int8":
        linear = sum(n + 4 * out for n, out in weights.quantized)
        other = prepared_other
    elif quantization == "nf4":
        linear = sum(
            _ceil_div(n, 2)
            + _ceil_div(n, NF4_BLOCK)
            + 4 * _ceil_div(_ceil_div(n, NF4_BLOCK), NF4_NESTED_BLOCK)
            + NF4_CODES_BYTES
            for n, _ in weights.quantized
        )
        other = prepared_other
    else:
        raise ValueError(f"unknown quantization '{quantization}'")
    return (linear + other + weights.buffer_bytes) / MIB


@dataclass(frozen=True)
class Dimensions:
    """What the activation count needs from an architecture and a run config."""

    num_layers: int
    hidden: int
    intermediate: int
    heads: int
    seq: int
    batch: int
    vocab: int  # 0 for models whose head is not a vocabulary-sized output
    masked: bool  # text models get a 4-D attention mask (padding); ViTs none
    mlp_saved: int  # T*i-sized tensors the MLP activation keeps (see module docstring)
    attention_dropout: bool
    hidden_dropouts: int
    gpu: bool  # fused attention kernels and 1-byte dropout masks; on CPU scores are materialised and masks
    # have the input's dtype (PyTorch's CPU dropout multiplies by a noise tensor)

    @property
    def tokens(self) -> int:
        return self.seq * self.batch


def _first(arch: Any, names: tuple[str, ...], default: Any = None) -> Any:  # noqa: ANN401 - config values
    for name in names:
        value = getattr(arch, name, None)
        if value is not None:
            return value
    return default


def dimensions(shape: ModelShape, config: RunConfig) -> Dimensions:
    arch = shape.arch
    if arch is None:
        raise ValueError("the model shape carries no architecture config")
    hidden = int(_first(arch, ("hidden_size", "n_embd", "d_model")))
    intermediate = int(_first(arch, ("intermediate_size", "n_inner", "ffn_dim"), 4 * hidden) or 4 * hidden)
    heads = int(_first(arch, ("num_attention_heads", "n_head")))
    image, patch = getattr(arch, "image_size", None), getattr(arch, "patch_size", None)
    if image and patch:  # ViT-style: patches + [CLS] (+ the distillation token of DeiT)
        seq = (int(image) // int(patch)) ** 2 + (2 if shape.model_type == "deit" else 1)
    else:
        seq = config.model.max_length
    act = str(_first(arch, ("hidden_act", "activation_function"), "gelu"))
    if shape.model_type in _GATED:
        mlp_saved = 3  # act(gate) * up: gate output, act output and up output
    elif act == "gelu_new":
        mlp_saved = 4  # transformers' Python tanh-GELU keeps its input and three intermediates
    else:
        mlp_saved = 1
    attn_drop = float(_first(arch, ("attention_probs_dropout_prob", "attn_pdrop", "attention_dropout"), 0.0))
    hidden_drop = float(_first(arch, ("hidden_dropout_prob", "resid_pdrop", "hidden_dropout"), 0.0))
    device = config.train.device
    return Dimensions(
        num_layers=shape.num_layers,
        hidden=hidden,
        intermediate=intermediate,
        heads=heads,
        seq=seq,
        batch=config.train.batch_size,
        vocab=int(getattr(arch, "vocab_size", 0) or 0) if config.task == "causal_lm" else 0,
        masked=not (image and patch),
        mlp_saved=mlp_saved,
        attention_dropout=attn_drop > 0,
        hidden_dropouts=2 if hidden_drop > 0 else 0,
        gpu=device == "auto" or device.startswith("cuda"),  # auto: assumed to find a GPU
    )


@dataclass(frozen=True)
class Terms:
    """The estimate's terms in bytes (per traversed block, per trained layer, fixed), for printing and tests."""

    per_depth: dict[str, float]
    per_layer: dict[str, float]
    base: dict[str, float]

    def cost_model(self) -> CostModel:
        return CostModel(
            base=sum(self.base.values()) / MIB,
            per_depth=sum(self.per_depth.values()) / MIB,
            per_layer=sum(self.per_layer.values()) / MIB,
        )


def training_terms(shape: ModelShape, config: RunConfig, quantization: str) -> Terms:
    """The training-memory terms of `shape` under `config` with base weights at `quantization`."""
    dims = dimensions(shape, config)
    weights = shape.weights
    if weights is None:
        raise ValueError("the model shape carries no base-weight counts")
    t, h, i, layers = dims.tokens, dims.hidden, dims.intermediate, max(dims.num_layers, 1)
    sixteen = config.train.precision in ("bf16", "fp16")
    quantized = quantization != "none"
    ckpt = weights.checkpoint_bytes
    p_attn = 2 if sixteen else (4 if quantized else ckpt)
    p_act = 4 if quantized else p_attn
    if quantization == "int8" and not dims.gpu:  # bitsandbytes' CPU int8 matmul runs F.linear under autocast
        p_act = p_attn
    p_res = 4 if quantized else ckpt
    p_lora = 2 if sixteen else 4  # LoRA factors are fp32; autocast casts their inputs to 16 bits

    block: dict[str, float] = {"norm inputs": 2 * t * h * 4}
    if dims.gpu:
        block["attention (fused)"] = 4 * t * h * p_attn
    else:  # CPU autocast leaves attention in fp32 (observed with torch 2.13)
        p_cpu = 4 if sixteen else p_attn
        scores = dims.heads * dims.seq * dims.seq * dims.batch
        block["attention (materialised)"] = (3 * t * h + scores * (3 if dims.attention_dropout else 1)) * p_cpu
    block["MLP activation"] = dims.mlp_saved * t * i * p_act
    masks = dims.hidden_dropouts * t * h * (1 if dims.gpu else p_act)
    lora_widths = sum(shape.lora_inputs) / layers
    lora_modules = sum(shape.lora_modules) / layers
    if config.lora.dropout > 0:
        masks += t * lora_widths * (1 if dims.gpu else 4)
    if masks:
        block["dropout masks"] = masks
    if not quantized and sixteen and ckpt == 4:
        block["16-bit weight copies"] = sum(weights.quantized_per_block) / layers * 2
    if quantization == "int8":
        block["int8 matmul inputs"] = t * (3 * h * 4 + i * p_act)
    lora_saved = t * (lora_widths + config.lora.r * lora_modules) * p_lora

    per_layer = {"LoRA params, grads, AdamW": sum(shape.layer_params) / layers * ADAMW_BYTES}
    # Two moments of backward: its start (the logits' gradients) and each block's own backward (its
    # transient gradients, and with checkpointing its recomputed activations). The larger one counts.
    transients = 2 * t * i * p_act + 2 * t * h * 4
    if config.train.gradient_checkpointing:
        per_depth = {"block inputs (checkpointing)": t * h * p_res}
        peak_block = ("one block recomputed + its backward transients", sum(block.values()) + lora_saved + transients)
    else:
        per_depth = block
        per_layer["LoRA inputs kept"] = lora_saved
        peak_block = ("backward transients of one block", transients)
    logits = ("logits: fp32 log-softmax output and gradients", LOGIT_BYTES * t * dims.vocab)
    if dims.vocab and sixteen and ckpt == 4:  # autocast's 16-bit copy of an fp32 output layer, kept for the
        # backward of the hidden states (k-bit preparation keeps a 16-bit checkpoint's output layer 16-bit here)
        logits = (logits[0] + ", 16-bit copy of the output layer", logits[1] + dims.vocab * h * 2)
    base = dict([max(logits, peak_block, key=lambda item: item[1])])
    base["head params, grads, AdamW"] = shape.head_params * ADAMW_BYTES
    if dims.masked:
        base["attention mask"] = dims.batch * dims.seq * dims.seq
    base["fixed allowance"] = FIXED_MB * MIB
    return Terms(per_depth, per_layer, base)


@dataclass(frozen=True)
class Estimate:
    """Predicted memory of a client at one quantization: weights and the training cost model, in MiB."""

    quantization: str
    weights_mb: float
    training: CostModel
    num_layers: int

    def training_mb(self, count: int, lowest: int) -> float:
        return self.training.predict_counts(count, lowest, self.num_layers)

    def total_mb(self, count: int, lowest: int) -> float:
        return self.weights_mb + self.training_mb(count, lowest)


def estimate(shape: ModelShape, config: RunConfig, quantization: str) -> Estimate:
    if shape.weights is None:
        raise ValueError("the model shape carries no base-weight counts")
    cost = training_terms(shape, config, quantization).cost_model()
    weights = weights_mb(shape.weights, quantization, config.train.precision)
    return Estimate(quantization, weights, cost, shape.num_layers)


@dataclass
class Candidate:
    """A tier at one quantization: the layers its budget allows and what they are predicted to cost.

    `layers` None: not even the top layer fits the budget (`need_mb`: what the top layer needs). `floor`:
    the lowest layer with which `layers` layers fit the budget (0 without a memory budget); `lowest`: the
    lowest layer a plan of the run may train (the floor with `strategy.depth_aware`, else 0)."""

    estimate: Estimate
    layers: int | None
    floor: int
    lowest: int
    budget_mb: float | None  # training MiB the budgets leave (None: no memory budget)
    need_mb: float = 0.0

    @property
    def depth(self) -> int:
        """Blocks the budget lets backward traverse (-1: nothing fits)."""
        return -1 if self.layers is None else self.estimate.num_layers - self.floor

    def training_mb(self, deepest: bool) -> float:
        """Training MiB of the top `layers` layers, or (deepest) of `layers` layers down to `lowest`."""
        k = self.layers or 0
        return self.estimate.training_mb(k, self.lowest if deepest else self.estimate.num_layers - k)

    def total_mb(self, deepest: bool) -> float:
        return self.estimate.weights_mb + self.training_mb(deepest)

    @property
    def fits(self) -> bool | None:
        """Whether the deepest plan of the run stays within the memory budgets (None: no memory budget)."""
        if self.budget_mb is None:
            return None
        return self.layers is not None and self.training_mb(deepest=True) <= self.budget_mb + 1e-6


def _training_budget(tier: TierConfig, weights: float) -> float | None:
    """Training MiB a tier's budgets leave: `memory_mb`, and `total_memory_mb` minus the weights."""
    given = [tier.memory_mb, None if tier.total_memory_mb is None else tier.total_memory_mb - weights]
    budgets = [b for b in given if b is not None]
    return min(budgets) if budgets else None


def candidate(est: Estimate, tier: TierConfig, depth_aware: bool) -> Candidate:
    """The layers a tier trains at `est`'s quantization: its `layers` (or all), or the most its memory
    budgets allow at the top (as the run's budget conversion does, `budget_constraint`)."""
    budget = _training_budget(tier, est.weights_mb)
    n = est.num_layers
    if budget is None:
        return Candidate(est, tier.layers or n, 0, 0, None)
    try:
        constraint = budget_constraint(n, est.training, None, budget, None, tier.layers)
    except BudgetError:
        k = tier.layers or 1
        return Candidate(est, None, n, n, budget, need_mb=est.training.upper(k, n - k, n))
    floor = constraint.min_layer
    return Candidate(est, constraint.max_layers, floor, floor if depth_aware else 0, budget)


@dataclass
class TierPrediction:
    """The predicted memory of one tier: the candidate it uses, and for `auto` all three and why."""

    index: int
    tier: TierConfig
    chosen: Candidate
    candidates: list[Candidate] = field(default_factory=list)
    reason: str = ""


def predict_tiers(shape: ModelShape, config: RunConfig) -> list[TierPrediction]:
    """Per tier: quantization, layers, weights, training and total MiB (analytic). An `auto` tier gets every
    quantization as a candidate and uses the one whose `total_memory_mb` trains the most depth, then the
    most layers; ties go to the more precise (none, int8, nf4)."""
    estimates: dict[str, Estimate] = {}

    def est(q: str) -> Estimate:
        if q not in estimates:
            estimates[q] = estimate(shape, config, q)
        return estimates[q]

    depth_aware = config.strategy.depth_aware
    predictions = []
    for index, tier in enumerate(config.tiers):
        if tier.quantization != "auto":
            q = tier.quantization or config.model.quantization
            predictions.append(TierPrediction(index, tier, candidate(est(q), tier, depth_aware)))
            continue
        options = [candidate(est(q), tier, depth_aware) for q in QUANTIZATIONS]
        best = max(options, key=lambda c: (c.depth, c.layers or 0))  # max keeps the first (most precise) of ties
        if best.layers is None:
            reason = f"no quantization fits total_memory_mb {tier.total_memory_mb:,.0f}"
        else:
            same = [c.estimate.quantization for c in options if (c.depth, c.layers) == (best.depth, best.layers)]
            reason = (
                f"the most depth within total_memory_mb {tier.total_memory_mb:,.0f}: {best.layers} layers, "
                f"backward through {best.depth} of {best.estimate.num_layers} blocks"
                + (f" ({', '.join(same)} alike: ties go to the more precise)" if len(same) > 1 else "")
            )
        predictions.append(TierPrediction(index, tier, best, options, reason))
    return predictions
