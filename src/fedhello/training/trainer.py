"""Local training of one client: exactly the plan's LoRA layers (and the head) are trainable.

Everything outside the plan has `requires_grad=False`, so autograd neither stores activations nor runs
backward below the lowest trained layer, the optimizer holds no state for it, and it is not uploaded.
"""

from __future__ import annotations

import time

import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from fedhello.config import TrainConfig
from fedhello.models.layers import keys_for_layers
from fedhello.plan import ClientUpdate, Plan
from fedhello.tasks.base import Task


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the model's parameters in place (no re-allocation)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def extract_state(model: torch.nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {name: params[name].detach().to("cpu", copy=True) for name in names}


def freeze_for_plan(model: torch.nn.Module, layout: dict[str, int], plan: Plan) -> list[str]:
    """Make exactly the plan's parameters trainable; return their names."""
    trained = set(keys_for_layers(layout, plan.layers, plan.train_head))
    for name, param in model.named_parameters():
        param.requires_grad_(name in trained)
    return [name for name in layout if name in trained]


class LocalTrainer:
    """Trains a shared model for one client at a time; holds no per-client state."""

    def __init__(self, model: torch.nn.Module, task: Task, layout: dict[str, int], config: TrainConfig) -> None:
        self.model = model
        self.task = task
        self.layout = layout
        self.config = config

    def train(
        self, client_id: int, plan: Plan, global_state: dict[str, torch.Tensor], data: Dataset, seed: int
    ) -> ClientUpdate:
        """Start from `global_state`, train the plan's parameters on `data`, return their new values."""
        started = time.perf_counter()
        load_state(self.model, global_state)
        names = freeze_for_plan(self.model, self.layout, plan)
        params = dict(self.model.named_parameters())
        optimizer = torch.optim.AdamW(
            [params[n] for n in names], lr=self.config.lr, weight_decay=self.config.weight_decay
        )
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # dropout masks
        loader = DataLoader(
            data, batch_size=self.config.batch_size, shuffle=True, generator=generator, collate_fn=self.task.collate
        )
        device = next(self.model.parameters()).device
        self.model.train()
        steps, loss_sum = 0, 0.0
        for _ in range(self.config.local_epochs):
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                loss = self.task.loss(self.model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                loss_sum += loss.item()
                if self.config.max_steps and steps >= self.config.max_steps:
                    break
            if self.config.max_steps and steps >= self.config.max_steps:
                break
        optimizer.zero_grad(set_to_none=True)
        tensors = extract_state(self.model, names)
        update = ClientUpdate(client_id=client_id, plan=plan, tensors=tensors, num_samples=len(data))
        update.metrics = {
            "train_loss": loss_sum / max(steps, 1),
            "steps": float(steps),
            "seconds": time.perf_counter() - started,
            "bytes_up": float(update.num_bytes),
        }
        return update
