"""A task couples a model family, its data preprocessing and its metric behind one interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from datasets import Dataset

from fedhello.config import RunConfig
from fedhello.models.build import load_base, resolve_model_path, wrap_with_lora
from fedhello.models.precision import autocast
from fedhello.models.quantize import resolve as resolve_quantization
from fedhello.registry import Registry


class Task(ABC):
    """Builds the model and turns data into batches; evaluates a model on a split.

    A subclass sets `auto_model_class` (the transformers `AutoModelFor...` it builds, so a dry run can size
    the model offline) and `model_kind`, and implements `preprocess`, `collate` and `evaluate`; `loss`,
    `base_model_kwargs`, `check_base` and `metric` (the name of the headline metric) have defaults. It is built
    with the run config and the data's number of classes.
    """

    auto_model_class: ClassVar[Any]
    model_kind: ClassVar[str] = "a model"  # what `from_pretrained` loads, for one-line errors
    # the headline metric `evaluate` reports as "accuracy" (the round records' key), named where a user reads it:
    # the CLI's last line, summary.json (`metric`, `final_<metric>`), the report, accuracy.png
    metric: ClassVar[str] = "accuracy"
    # for `fedhello export`: peft's task type (what AutoPeftModelFor... loads; None: load with PeftModel), whether
    # the model has a head sized by the run's classes, and the transformers Auto class of its preprocessor
    peft_task_type: ClassVar[str | None] = None
    labelled_head: ClassVar[bool] = False
    processor_class: ClassVar[Any] = None

    def __init__(self, config: RunConfig, num_labels: int) -> None:
        self.config = config
        self.num_labels = num_labels
        self.model_path = resolve_model_path(config.model.name_or_path)

    def base_model_kwargs(self) -> dict[str, Any]:
        """Extra `from_pretrained` arguments of this task's base model."""
        return {}

    def check_base(self, base: torch.nn.Module) -> None:
        """Refuse, in one line, a base model this task cannot train (default: any model is fine)."""
        return None

    def build_model(self, quantization: str | None = None) -> torch.nn.Module:
        """The base model wrapped with LoRA (a `peft.PeftModel`) on the configured device, its frozen weights
        loaded in `quantization` (None: `model.quantization`)."""
        chosen = resolve_quantization(quantization, self.config)
        base = load_base(
            self.auto_model_class, self.model_path, self.model_kind, self.config, chosen, **self.base_model_kwargs()
        )
        self.check_base(base)
        return wrap_with_lora(base, self.config)

    @abstractmethod
    def preprocess(self, dataset: Dataset) -> Dataset:
        """Map raw samples to model inputs once, before partitioning."""

    @abstractmethod
    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Stack preprocessed samples into a batch (with `labels`)."""

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean loss of a batch (the training, Fisher and profiling objective), under the run's `train.precision`
        autocast wherever it is computed, so the profile measures what training does (and a quantized model
        whose embeddings stay 16-bit always runs under the autocast it needs)."""
        with autocast(next(iter(batch.values())).device, self.config.train.precision):
            return model(**batch).loss

    def loss_weight(self, batch: dict[str, torch.Tensor]) -> float:
        """How many terms `loss` averages over for this batch: its samples. Gradient accumulation weighs
        micro-batches by it, so that the accumulated gradient equals the whole batch's."""
        return float(len(batch["labels"]))

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        """Metrics of `model` on `dataset`, e.g. {"accuracy": ..., "loss": ...}."""


TASKS: Registry[type[Task]] = Registry("task", "task")


def classification_metrics(
    predictions: list[torch.Tensor], labels: list[torch.Tensor], loss_sum: float, num_labels: int
) -> dict[str, float]:
    """Accuracy, mean loss, macro-F1 and the sample count of a classification evaluation.

    Macro-F1 averages the per-class F1 over the classes present in the labels or the predictions, so a
    model that predicts only the majority class scores low even when that class is large."""
    pred = torch.cat(predictions) if predictions else torch.zeros(0, dtype=torch.long)
    gold = torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long)
    total = gold.numel()
    size = max(num_labels, int(pred.max()) + 1 if total else 0, int(gold.max()) + 1 if total else 0)
    confusion = torch.bincount(gold * size + pred, minlength=size * size).reshape(size, size).double()
    true_pos = confusion.diag()
    support, predicted = confusion.sum(1), confusion.sum(0)
    present = (support + predicted) > 0
    f1 = 2 * true_pos / (support + predicted).clamp(min=1)
    return {
        "accuracy": float(true_pos.sum()) / max(total, 1),
        "loss": loss_sum / max(total, 1),
        "macro_f1": float(f1[present].mean()) if bool(present.any()) else 0.0,
        "samples": float(total),
    }
