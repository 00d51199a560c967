"""Models wrapped with LoRA and the parameter -> transformer layer mapping."""

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
