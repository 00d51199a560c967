"""One trainer per base-weight quantization, so clients of one process may load their base model differently
(`tiers[].quantization`, a deployment node's `--node-config quantization=...`).

Every model carries the same LoRA and head tensors (they stay in full precision whatever the base), so a client
trains the same global adapter whichever model it runs on; the models differ only in how the frozen base
weights are stored. The run's own model is reused for the run's quantization; another is built on first use.
"""

from __future__ import annotations

import torch

from fedhello.config import TrainConfig
from fedhello.errors import FedHelloError
from fedhello.models.layers import trainable_layout
from fedhello.tasks.base import Task
from fedhello.training.trainer import LocalTrainer


class TrainerPool:
    """`trainer(quantization)`: a `LocalTrainer` on a model whose base weights are loaded in that quantization."""

    def __init__(
        self, task: Task, model: torch.nn.Module, quantization: str, layout: dict[str, int], config: TrainConfig
    ) -> None:
        self.task = task
        self.layout = layout
        self.config = config
        self._trainers = {quantization: LocalTrainer(model, task, layout, config)}

    @property
    def quantizations(self) -> list[str]:
        """The quantizations loaded so far."""
        return list(self._trainers)

    def trainer(self, quantization: str) -> LocalTrainer:
        if quantization not in self._trainers:
            # the LoRA initialisation of the new model is overwritten by the global adapter before training;
            # forking the RNG keeps the build from shifting the run's random draws
            with torch.random.fork_rng():
                model = self.task.build_model(quantization)
            layout = trainable_layout(model.named_parameters())
            if layout != self.layout:
                raise FedHelloError(
                    f"the {quantization} model's adapter differs from the run's (fix: quantize only linear base "
                    "layers; keep lora.target_modules and lora.head_modules the same for every client)"
                )
            self._trainers[quantization] = LocalTrainer(model, self.task, layout, self.config)
        return self._trainers[quantization]
