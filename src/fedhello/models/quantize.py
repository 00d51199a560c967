"""Quantized base weights (QLoRA-style): load the frozen base model in 8 bits or 4-bit NF4 through
`bitsandbytes`, prepare it with peft's k-bit preparation, and put LoRA on top in full precision.

Only the frozen base weights are quantized. The LoRA factors, the task head (`lora.head_modules`, kept out
of quantization) and everything the server aggregates stay fp32, so clients that load different
quantizations federate the same tensors.

`weights_mb` is the memory a loaded model's tensors occupy (parameters and buffers, quantized storage
included): the term that quantization shrinks and that a `total_memory_mb` budget counts on top of the
training memory.
"""

from __future__ import annotations

from typing import Any

import torch

from fedhello.config import RunConfig
from fedhello.errors import ConfigError
from fedhello.models.precision import DTYPES

QUANTIZATIONS = ("none", "int8", "nf4")  # most to least precise: ties in a budget go to the first
NODE_QUANTIZATION_KEY = "quantization"  # a deployment node's own choice: --node-config 'quantization=nf4'
INSTALL_FIX = "pip install 'fedhello[llm]' (bitsandbytes)"


def resolve(quantization: str | None, config: RunConfig) -> str:
    """The quantization a client loads: its own (tier or node), else the run's `model.quantization`."""
    return quantization if quantization not in (None, "auto") else config.model.quantization


def check_available(quantization: str, field: str = "model.quantization") -> None:
    """Refuse, in one line, a quantization this machine cannot load."""
    if quantization == "none":
        return
    if quantization not in QUANTIZATIONS:
        raise ConfigError(field, f"unknown quantization '{quantization}'", f"use one of {', '.join(QUANTIZATIONS)}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError(field, f"{quantization} needs the bitsandbytes package", INSTALL_FIX) from None


def quantization_kwargs(config: RunConfig, quantization: str, device: torch.device) -> dict[str, Any]:
    """Extra `from_pretrained` arguments that load the base weights in `quantization` on `device`.

    The compute dtype of NF4 layers follows `train.precision`; the task head is never quantized (it is
    trained in full). bitsandbytes places quantized weights at load time, hence the `device_map`."""
    check_available(quantization)
    if quantization == "none":
        return {}
    from transformers import BitsAndBytesConfig

    skip = list(config.lora.head_modules) or None
    if quantization == "int8":
        bnb = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    else:
        bnb = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=DTYPES[config.train.precision],
            llm_int8_skip_modules=skip,
        )
    target = device.index if device.type == "cuda" and device.index is not None else device.type
    return {"quantization_config": bnb, "device_map": {"": target}}


def prepare(model: torch.nn.Module, quantization: str, precision: str = "fp32") -> torch.nn.Module:
    """peft's k-bit preparation of a quantized base (frozen base, fp32 norms); a no-op for unquantized weights.
    Refuses a model in which nothing was quantized.

    Two departures from peft's defaults, both to keep what a weak client saves:
    - no input gradients: peft's reentrant-checkpointing path makes the embeddings' output require grad, and
      backward would then run through every block, below the lowest trained layer too. The trainer enables
      non-reentrant checkpointing itself (`train.gradient_checkpointing`), which needs no such hook;
    - under 16-bit autocast (`train.precision` bf16/fp16) the frozen input and output embeddings keep their
      16-bit checkpoint dtype instead of being cast to fp32: they are the largest unquantized tensors of an
      LLM (a tied 128k x 2048 table is 1 GiB in fp32), and autocast would copy an fp32 output layer back to
      16 bits for every step anyway."""
    if quantization == "none":
        return model
    import bitsandbytes as bnb
    from peft import prepare_model_for_kbit_training

    layer_type = bnb.nn.Linear4bit if quantization == "nf4" else bnb.nn.Linear8bitLt
    if not any(isinstance(m, layer_type) for m in model.modules()):
        raise ConfigError(
            "model.quantization", f"no linear layer of this model was loaded in {quantization}", "use none"
        )
    modules = (model.get_input_embeddings(), model.get_output_embeddings())
    embeddings = [m for m in modules if isinstance(getattr(m, "weight", None), torch.Tensor)]  # ViT: patches
    dtypes = [m.weight.dtype for m in embeddings]
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if precision in ("bf16", "fp16"):
        for module, dtype in zip(embeddings, dtypes, strict=True):
            if dtype in (torch.bfloat16, torch.float16):
                module.to(dtype)
    return model


def is_quantized(base: torch.nn.Module) -> bool:
    """Whether `from_pretrained` loaded this (transformers) model through a quantizer, which placed its weights on
    their device for good: such a model cannot be moved with `.to()`."""
    return getattr(base, "hf_quantizer", None) is not None


def weights_mb(model: torch.nn.Module) -> float:
    """MiB held by the model's tensors: parameters (quantized storage as stored, with its statistics) and
    buffers, each storage counted once (tied weights share one)."""
    seen: set[int] = set()
    total = 0
    tensors = [*model.parameters(), *model.buffers()]
    for tensor in tensors:
        extra = _quant_state_tensors(tensor)
        for t in (tensor, *extra):
            key = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
            if key in seen:
                continue
            seen.add(key)
            total += t.numel() * t.element_size()
    return total / 2**20


def _quant_state_tensors(tensor: torch.Tensor) -> list[torch.Tensor]:
    """The statistics bitsandbytes keeps beside a quantized weight (NF4 absmax and its own quantization
    state, LLM.int8 row scales), which `parameters()` does not list."""
    found: list[torch.Tensor] = []
    state = getattr(tensor, "quant_state", None)
    while state is not None:
        found.extend(t for t in (getattr(state, "absmax", None), getattr(state, "code", None)) if t is not None)
        state = getattr(state, "state2", None)
    scales = getattr(tensor, "SCB", None)
    if isinstance(scales, torch.Tensor):
        found.append(scales)
    return found
