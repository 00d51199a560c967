"""Sequence classification with any `transformers` encoder (BERT, RoBERTa, MiniLM, ...)."""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from fedhello.models.build import load_pretrained
from fedhello.tasks.base import TASKS, Task, classification_metrics


@TASKS.register("text_classification")
class TextClassificationTask(Task):
    auto_model_class = AutoModelForSequenceClassification
    model_kind = "a sequence classification model"
    peft_task_type = "SEQ_CLS"
    labelled_head = True
    processor_class = AutoTokenizer

    def __init__(self, config, num_labels: int) -> None:  # noqa: ANN001 - RunConfig
        super().__init__(config, num_labels)
        self.tokenizer = load_pretrained(AutoTokenizer.from_pretrained, self.model_path, "a tokenizer")
        self._collator = DataCollatorWithPadding(self.tokenizer, return_tensors="pt")

    def base_model_kwargs(self) -> dict[str, Any]:
        # a checkpoint fine-tuned on another label set has a head of another size: start a new head of
        # num_labels instead of failing (the head is trained and federated anyway)
        return {"num_labels": self.num_labels, "ignore_mismatched_sizes": True}

    def preprocess(self, dataset: Dataset) -> Dataset:
        text, label = self.config.data.text_column, self.config.data.label_column
        max_length = self.config.model.max_length

        def encode(batch: dict[str, list]) -> dict[str, list]:
            encoded = self.tokenizer(batch[text], truncation=True, max_length=max_length)
            encoded["labels"] = batch[label]
            return encoded

        return dataset.map(encode, batched=True, remove_columns=dataset.column_names, keep_in_memory=True)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        features = [
            {k: s[k] for k in ("input_ids", "attention_mask", "labels", "token_type_ids") if k in s} for s in samples
        ]
        return self._collator(features)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        model.eval()
        device = next(model.parameters()).device
        predictions, labels, loss_sum = [], [], 0.0
        for batch in DataLoader(dataset, batch_size=64, collate_fn=self.collate):
            batch = {k: v.to(device) for k, v in batch.items()}
            out = model(**batch)
            predictions.append(out.logits.argmax(-1).cpu())
            labels.append(batch["labels"].cpu())
            loss_sum += out.loss.item() * batch["labels"].numel()
        return classification_metrics(predictions, labels, loss_sum, self.num_labels)
