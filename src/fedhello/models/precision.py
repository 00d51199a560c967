"""Mixed precision: the autocast context of `train.precision`, shared by local training and evaluation."""

from __future__ import annotations

import contextlib

import torch

from fedhello.errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # train.precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for `precision` (fp32: none). fp16 needs CUDA; bf16 also runs on CPU."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision", "fp16 autocast needs a CUDA device", "use bf16 or fp32")
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])
