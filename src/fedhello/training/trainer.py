"""Local training of one client: exactly the plan's LoRA layers (and the head) are trainable.

Everything outside the plan has `requires_grad=False`, so autograd neither stores activations nor runs
backward below the lowest trained layer, the optimizer holds no state for it, and it is not uploaded.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from fedhello.config import TrainConfig
from fedhello.errors import ConfigError
from fedhello.models.layers import HEAD, keys_for_layers
from fedhello.plan import ClientUpdate, Plan
from fedhello.resources.memory import MemoryMeter, meter_for
from fedhello.tasks.base import Task
from fedhello.training.ranks import lora_factor, truncate, zero_beyond_rank


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
    frozen_factors = {f for f, train in (("A", plan.train_lora_a), ("B", plan.train_lora_b)) if not train}
    if frozen_factors:  # e.g. FFA-LoRA: A stays at its shared init and is never sent
        trained = {name for name in trained if lora_factor(name) not in frozen_factors}
    for name, param in model.named_parameters():
        param.requires_grad_(name in trained)
    return [name for name in layout if name in trained]


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for `precision` (fp32: none). fp16 needs CUDA; bf16 also runs on CPU."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision", "fp16 autocast needs a CUDA device", "use bf16 or fp32")
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


class LocalTrainer:
    """Trains a shared model for one client at a time; holds no per-client state.

    Options (all off by default): `precision` autocasts forward and loss (fp16 with a gradient scaler),
    `grad_accum` sums gradients of that many micro-batches per optimizer step (the mean over them, so an
    effective batch does not depend on how it is split), `gradient_checkpointing` recomputes activations.
    """

    def __init__(self, model: torch.nn.Module, task: Task, layout: dict[str, int], config: TrainConfig) -> None:
        self.model = model
        self.task = task
        self.layout = layout
        self.config = config
        if config.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            # non-reentrant checkpointing lets gradients reach LoRA inputs without grads on the embeddings
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self._warmed_up = False

    def _start_meter(self, data: Dataset) -> MemoryMeter:
        """`train.record_resources`: start a peak-memory window for this client. The first call of a process
        runs one throw-away backward first, because the first backward allocates one-time buffers that
        would otherwise be charged to the first client (parameters and RNG state are left unchanged)."""
        device = next(self.model.parameters()).device
        if not self._warmed_up:
            self._warmed_up = True
            rows = [data[i] for i in range(min(len(data), self.config.batch_size))]
            batch = {k: v.to(device) for k, v in self.task.collate(rows).items()}
            for name, param in self.model.named_parameters():
                param.requires_grad_(name in self.layout)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                self.task.loss(self.model, batch).backward()
            for param in self.model.parameters():
                param.grad = None
        meter = meter_for(device)
        meter.start()
        return meter

    def train(
        self,
        client_id: int,
        plan: Plan,
        global_state: dict[str, torch.Tensor],
        data: Dataset,
        seed: int,
        lr: float | None = None,
    ) -> ClientUpdate:
        """Start from `global_state`, train the plan's parameters on `data`, return their new values.

        `lr` is this round's learning rate (the server's schedule, `training.schedule.round_lr`); None means
        `train.lr`. Besides the tensors, the update's metrics carry `grad_norm.<layer>`: the root-mean-square
        over optimizer steps of each trained layer's LoRA gradient norm (what Fed-pilot's value uses)."""
        started = time.perf_counter()
        load_state(self.model, global_state)
        if plan.ranks:  # rank-heterogeneous methods: this client is a rank-r adapter on those layers
            zero_beyond_rank(self.model, self.layout, plan.ranks)
        meter = self._start_meter(data) if self.config.record_resources else None
        names = freeze_for_plan(self.model, self.layout, plan)
        params = dict(self.model.named_parameters())
        optimizer = torch.optim.AdamW(
            [params[n] for n in names], lr=self.config.lr if lr is None else lr, weight_decay=self.config.weight_decay
        )
        layer_of = {n: self.layout[n] for n in names if self.layout[n] != HEAD}
        grad_sq: dict[int, float] = {}
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # dropout masks
        loader = DataLoader(
            data, batch_size=self.config.batch_size, shuffle=True, generator=generator, collate_fn=self.task.collate
        )
        device = next(self.model.parameters()).device
        accum = self.config.grad_accum
        scaler = torch.amp.GradScaler("cuda") if self.config.precision == "fp16" else None
        self.model.train()
        steps, micro, loss_sum = 0, 0, 0.0
        optimizer.zero_grad(set_to_none=True)
        step_times: list[float] = []
        step_cpu: list[float] = []  # CPU time per step: robust to other processes on a shared machine
        step_clock, cpu_clock = time.perf_counter(), time.process_time()
        for _ in range(self.config.local_epochs):
            for i, batch in enumerate(loader):
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast(device, self.config.precision):
                    loss = self.task.loss(self.model, batch)
                # an epoch's last group may hold fewer micro-batches: average over those it has
                group = min(accum, len(loader) - (i // accum) * accum)
                scaled = loss / group
                (scaler.scale(scaled) if scaler else scaled).backward()
                micro += 1
                loss_sum += loss.item()
                if (i + 1) % accum and i + 1 != len(loader):
                    continue
                if scaler:
                    scaler.unscale_(optimizer)
                _accumulate_layer_norms(grad_sq, params, layer_of)
                if self.config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_([params[n] for n in names], self.config.max_grad_norm)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                if meter is not None:
                    step_times.append(time.perf_counter() - step_clock)
                    step_cpu.append(time.process_time() - cpu_clock)
                    step_clock, cpu_clock = time.perf_counter(), time.process_time()
                if self.config.max_steps and steps >= self.config.max_steps:
                    break
            if self.config.max_steps and steps >= self.config.max_steps:
                break
        optimizer.zero_grad(set_to_none=True)
        tensors = extract_state(self.model, names)
        if plan.ranks:  # upload only the client's rank-r factors
            tensors = {n: truncate(n, t, plan.ranks.get(self.layout[n])) for n, t in tensors.items()}
        update = ClientUpdate(client_id=client_id, plan=plan, tensors=tensors, num_samples=len(data))
        update.metrics = {
            "train_loss": loss_sum / max(micro, 1),
            "steps": float(steps),
            "seconds": time.perf_counter() - started,
            "bytes_up": float(update.num_bytes),
            **{f"grad_norm.{layer}": (total / max(steps, 1)) ** 0.5 for layer, total in sorted(grad_sq.items())},
        }
        if meter is not None:  # the first step pays one-off costs (optimizer state), so the median skips it
            peak = meter.peak_mb()
            update.metrics["step_seconds"] = statistics.median(step_times[1:] or step_times or [0.0])
            update.metrics["step_cpu_seconds"] = statistics.median(step_cpu[1:] or step_cpu or [0.0])
            if peak is not None:
                update.metrics["peak_mem_mb"] = peak
        return update


def _accumulate_layer_norms(
    totals: dict[int, float], params: dict[str, torch.nn.Parameter], layer_of: dict[str, int]
) -> None:
    """Add each trained layer's squared gradient norm of this step (before clipping) to `totals`."""
    step: dict[int, float] = {}
    for name, layer in layer_of.items():
        grad = params[name].grad
        if grad is not None:
            step[layer] = step.get(layer, 0.0) + float(grad.detach().float().pow(2).sum())
    for layer, value in step.items():
        totals[layer] = totals.get(layer, 0.0) + value
