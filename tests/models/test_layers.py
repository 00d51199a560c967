import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    RobertaConfig,
    RobertaForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
)

from fedhello.models.layers import HEAD, keys_for_layers, layer_index, num_blocks, trainable_layout


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("base_model.model.bert.encoder.layer.1.attention.self.query.lora_A.default.weight", 1),
        ("base_model.model.bert.encoder.layer.10.attention.self.query.lora_A.default.weight", 10),
        ("base_model.model.roberta.encoder.layer.11.attention.self.value.lora_B.default.weight", 11),
        ("base_model.model.vit.encoder.layer.3.attention.attention.query.lora_A.default.weight", 3),
        ("base_model.model.transformer.h.7.attn.c_attn.lora_A.default.weight", 7),
        ("base_model.model.model.layers.21.self_attn.q_proj.lora_B.default.weight", 21),
        ("base_model.model.classifier.modules_to_save.default.weight", None),
        ("base_model.model.bert.embeddings.word_embeddings.weight", None),
    ],
)
def test_layer_index(name, index):
    assert layer_index(name) == index


def test_layer_1_never_matches_10_or_11():
    names = [f"m.encoder.layer.{i}.q.lora_A.default.weight" for i in range(12)]
    layout = {n: layer_index(n) for n in names}
    assert keys_for_layers(layout, [1], head=False) == [names[1]]


def _wrap(model, targets, head):
    config = LoraConfig(r=2, lora_alpha=4, target_modules=targets, modules_to_save=head)
    return get_peft_model(model, config)


ARCHITECTURES = [
    (
        lambda: BertForSequenceClassification(
            BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32)
        ),
        ["query", "value"],
        ["classifier"],
        3,
    ),
    (
        lambda: RobertaForSequenceClassification(
            RobertaConfig(
                vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32
            )
        ),
        ["query", "value"],
        ["classifier"],
        2,
    ),
    (
        lambda: ViTForImageClassification(
            ViTConfig(
                image_size=8,
                patch_size=4,
                hidden_size=16,
                num_hidden_layers=4,
                num_attention_heads=2,
                intermediate_size=32,
                num_labels=3,
            )
        ),
        ["q_proj", "v_proj"],
        ["classifier"],
        4,
    ),
    (lambda: GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=3, n_head=2)), ["c_attn"], None, 3),
    (
        lambda: LlamaForCausalLM(
            LlamaConfig(
                vocab_size=50,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=2,
            )
        ),
        ["q_proj", "v_proj"],
        None,
        2,
    ),
]


@pytest.mark.parametrize(("build", "targets", "head", "blocks"), ARCHITECTURES)
def test_trainable_layout_covers_every_trainable_parameter(build, targets, head, blocks):
    torch.manual_seed(0)
    base = build()
    assert num_blocks(base.config) == blocks
    model = _wrap(base, targets, head)
    layout = trainable_layout(model.named_parameters())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(layout) == trainable
    assert {i for i in layout.values() if i != HEAD} == set(range(blocks))
    assert (HEAD in layout.values()) == bool(head)
    per_layer = [sum(1 for i in layout.values() if i == b) for b in range(blocks)]
    assert len(set(per_layer)) == 1 and per_layer[0] == 2 * len(targets)
