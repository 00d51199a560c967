"""Models: LoRA wrapping and devices (`build`), the parameter -> transformer layer mapping (`layers`), the
federated adapter state (`adapter`), rank truncation (`ranks`), mixed precision (`precision`), and what a
model name means without downloading it (`architectures`)."""

from fedhello.models.build import load_pretrained, resolve_model_path, select_device, wrap_with_lora
from fedhello.models.layers import HEAD, keys_for_layers, layer_index, num_blocks, trainable_layout

__all__ = [
    "HEAD",
    "keys_for_layers",
    "layer_index",
    "load_pretrained",
    "num_blocks",
    "resolve_model_path",
    "select_device",
    "trainable_layout",
    "wrap_with_lora",
]
