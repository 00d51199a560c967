"""Image classification with a vision transformer (ViT, DeiT, ...) via `AutoModelForImageClassification`.

Training images get the paper's augmentation (random resized crop + horizontal flip), evaluation images
a resize + center crop; both are normalised with the checkpoint's image processor statistics. The
transforms are written with PIL and torch (torchvision is not required) and draw from torch's global
generator, which the trainer seeds per client and round, so runs are reproducible.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from PIL import Image
from torch.utils.data import DataLoader
from transformers import AutoImageProcessor, AutoModelForImageClassification

from fedhello.models.build import load_pretrained
from fedhello.models.precision import autocast
from fedhello.tasks.base import TASKS, Task, classification_metrics


def to_rgb(value: Any) -> Image.Image:
    """A PIL RGB image from what a data set holds: a PIL image, a `{"bytes", "path"}` dict, or a path."""
    if isinstance(value, dict):
        value = Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
    elif isinstance(value, str):
        value = Image.open(value)
    return value.convert("RGB")


def random_resized_crop_box(
    width: int, height: int, scale: tuple[float, float] = (0.08, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a random crop covering `scale` of the area with aspect `ratio`
    (the Inception crop, as torchvision's RandomResizedCrop); falls back to a center crop."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(*scale))
        aspect = math.exp(float(torch.empty(1).uniform_(*log_ratio)))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,)))
            left = int(torch.randint(0, width - w + 1, (1,)))
            return left, top, left + w, top + h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


class ImageTransform:
    """PIL image -> normalised CHW float tensor of `size`; `train` adds crop/flip augmentation."""

    def __init__(self, size: tuple[int, int], mean: list[float], std: list[float], train: bool) -> None:
        self.height, self.width = size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.train = train

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if self.train:
            box = random_resized_crop_box(*image.size)
            image = image.resize((self.width, self.height), Image.BILINEAR, box=box)
            if float(torch.rand(1)) < 0.5:
                image = image.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            # resize the shorter side to the target, then take the center
            scale = max(self.width / image.width, self.height / image.height)
            resized = (max(self.width, round(image.width * scale)), max(self.height, round(image.height * scale)))
            image = image.resize(resized, Image.BILINEAR)
            left, top = (resized[0] - self.width) // 2, (resized[1] - self.height) // 2
            image = image.crop((left, top, left + self.width, top + self.height))
        pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255.0
        return (pixels - self.mean) / self.std


def processor_settings(processor: Any) -> tuple[tuple[int, int], list[float], list[float]]:
    """(height, width), mean and std from an image processor of any transformers version."""
    size = processor.size
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    if get("height") and get("width"):
        hw = (int(get("height")), int(get("width")))
    else:
        edge = int(get("shortest_edge") or 224)
        hw = (edge, edge)
    mean = list(processor.image_mean or [0.5, 0.5, 0.5])
    std = list(processor.image_std or [0.5, 0.5, 0.5])
    return hw, mean, std


@TASKS.register("image_classification")
class ImageClassificationTask(Task):
    auto_model_class = AutoModelForImageClassification
    model_kind = "an image classification model"
    labelled_head = True  # peft has no AutoPeftModel class for images: an export loads with PeftModel
    processor_class = AutoImageProcessor

    def __init__(self, config, num_labels: int) -> None:  # noqa: ANN001 - RunConfig
        super().__init__(config, num_labels)
        processor = load_pretrained(AutoImageProcessor.from_pretrained, self.model_path, "an image processor")
        size, mean, std = processor_settings(processor)
        self.train_transform = ImageTransform(size, mean, std, train=True)
        self.eval_transform = ImageTransform(size, mean, std, train=False)

    def base_model_kwargs(self) -> dict[str, Any]:
        # an in21k checkpoint has no (or a different) classifier: a new head of num_labels is initialised
        return {"num_labels": self.num_labels, "ignore_mismatched_sizes": True}

    def preprocess(self, dataset: Dataset) -> Dataset:
        """Keep the images undecoded (they are transformed per batch, freshly augmented every epoch), the
        labels, and the domain column when the data has one (for the domain partitioners)."""
        data = self.config.data
        keep = [data.image_column, data.label_column]
        domain = self.config.partition.domain_column
        if domain in dataset.column_names and domain not in keep:
            keep.append(domain)
        dataset = dataset.select_columns(keep)
        if data.label_column != "labels":
            dataset = dataset.rename_column(data.label_column, "labels")
        return dataset.rename_column(data.image_column, "image") if data.image_column != "image" else dataset

    def _batch(self, samples: list[dict[str, Any]], transform: ImageTransform) -> dict[str, torch.Tensor]:
        return {
            "pixel_values": torch.stack([transform(to_rgb(s["image"])) for s in samples]),
            "labels": torch.tensor([int(s["labels"]) for s in samples], dtype=torch.long),
        }

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Training batches (augmented)."""
        return self._batch(samples, self.train_transform)

    def eval_collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self._batch(samples, self.eval_transform)

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, dataset: Dataset) -> dict[str, float]:
        model.eval()
        device = next(model.parameters()).device
        predictions, labels, loss_sum = [], [], 0.0
        for batch in DataLoader(dataset, batch_size=64, collate_fn=self.eval_collate):
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device, self.config.train.precision):
                out = model(**batch)
            predictions.append(out.logits.argmax(-1).cpu())
            labels.append(batch["labels"].cpu())
            loss_sum += out.loss.float().item() * batch["labels"].numel()
        return classification_metrics(predictions, labels, loss_sum, self.num_labels)
