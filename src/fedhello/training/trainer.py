"""Local training of one client: exactly the plan's LoRA layers (and the head) are trainable.

Everything outside the plan has `requires_grad=False`, so autograd neither stores activations nor runs
backward below the lowest trained layer, the optimizer holds no state for it, and it is not uploaded.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from fedhello.components import ALLOCATORS
from fedhello.config import StrategyConfig, TrainConfig
from fedhello.models.adapter import extract_state, freeze_for_plan, load_state
from fedhello.models.layers import HEAD, model_depth
from fedhello.models.precision import autocast
from fedhello.models.quantize import weights_mb
from fedhello.models.ranks import lora_factor, truncate, zero_beyond_rank
from fedhello.models.recompute import recomputed_blocks, set_recompute, supports_recompute
from fedhello.plan import GRAD_NORM, LOCAL_TEST, ClientUpdate, Plan
from fedhello.privacy.mechanism import privatize_upload
from fedhello.resources.memory import MemoryMeter, meter_for
from fedhello.tasks.base import Task
from fedhello.training.attack import hostile_clients, poison
from fedhello.training.store import ClientStore


@dataclass
class _Stats:
    """What one client's optimisation loop counted."""

    steps: int = 0
    loss_sum: float = 0.0  # sum of micro-batch mean losses times their weights
    weight_sum: float = 0.0
    step_times: list[float] = field(default_factory=list)
    step_cpu: list[float] = field(default_factory=list)  # CPU time per step: robust on a shared machine
    grad_sq: dict[int, torch.Tensor] = field(default_factory=dict)  # per layer: float64 sum of squared grad norms

    def add(self, other: _Stats) -> None:
        """Count another phase's loop in."""
        self.steps += other.steps
        self.loss_sum += other.loss_sum
        self.weight_sum += other.weight_sum
        self.step_times += other.step_times
        self.step_cpu += other.step_cpu
        for layer, value in other.grad_sq.items():
            self.grad_sq[layer] = self.grad_sq[layer] + value if layer in self.grad_sq else value


def micro_batch_groups(loader: Iterable[dict[str, torch.Tensor]], size: int) -> Iterator[list[dict[str, torch.Tensor]]]:
    """The loader's batches in groups of `size` (one optimizer step each); the last group of a pass may be
    shorter. A group is collected before its first backward so its total weight is known up front."""
    group: list[dict[str, torch.Tensor]] = []
    for batch in loader:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


class LocalTrainer:
    """Trains a shared model for one client at a time; holds no per-client state.

    Options (all off by default): `precision` autocasts forward and loss (fp16 with a gradient scaler),
    `grad_accum` sums gradients of that many micro-batches per optimizer step, weighting every sample (every
    predicted token of a causal LM) equally, so the step is the full batch's however it is split -- an
    epoch's short last micro-batch included; `gradient_checkpointing` recomputes the activations of every block
    backward traverses (for every plan), otherwise a plan's `recompute` says how many blocks do
    (`fedhello.models.recompute`, switched on the shared model per client).
    A method's client side (`strategy`, default the task config's `strategy:`) is its strategy's `ClientHook`
    (`fedhello.training.hooks`), called around every client's training.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: Task,
        layout: dict[str, int],
        config: TrainConfig,
        strategy: StrategyConfig | None = None,
    ) -> None:
        self.model = model
        self.task = task
        self.layout = layout
        self.config = config
        options = strategy if strategy is not None else task.config.strategy
        self.hook = ALLOCATORS.get(options.name).client_hook(options, model, layout)
        self.num_layers = model_depth(model)
        self._warmed_up = False

    @functools.cached_property
    def weights_mb(self) -> float:
        """MiB the model's tensors hold (base weights at their quantization, adapter, head): what a client
        holds before training; `total_mem_mb` = this + the training peak."""
        return weights_mb(self.model)

    def _warm_up(self, data: Dataset) -> None:
        """`train.record_resources`: before the first client of a process is measured, one throw-away optimizer step
        through the whole training path -- every layer, then every block recomputing where the model can --
        because first uses allocate one-time buffers (autograd, the optimizer, the data loader, recomputation)
        that would otherwise be charged to the first client. It moves the adapter: the caller loads the client's
        starting state afterwards. The RNG state is left unchanged."""
        if self._warmed_up:
            return
        self._warmed_up = True
        device = next(self.model.parameters()).device
        names = freeze_for_plan(self.model, self.layout, Plan(tuple(range(self.num_layers))))
        rows = data.select(range(min(len(data), self.config.batch_size)))
        passes = (range(0), range(self.num_layers)) if supports_recompute(self.model) else (range(0),)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for blocks in passes:
                if blocks:
                    set_recompute(self.model, blocks)
                try:
                    self._optimize(names, rows, 0, None, max_steps=1)
                finally:
                    if blocks:
                        set_recompute(self.model, ())

    def train(
        self,
        client_id: int,
        plan: Plan,
        global_state: dict[str, torch.Tensor],
        data: Dataset,
        seed: int,
        lr: float | None = None,
        round_num: int = 0,
        store: ClientStore | None = None,
        local_test: Dataset | None = None,
    ) -> ClientUpdate:
        """Start from `global_state`, train the plan's parameters on `data`, return their new values.

        `lr` is this round's learning rate (the server's schedule, `training.schedule.round_lr`); None means
        `train.lr`. Besides the tensors, the update's metrics carry `grad_norm.<layer>`: the root-mean-square
        over optimizer steps of each trained layer's LoRA gradient norm (what Fed-pilot's value uses).
        A plan with personal parts (`plan.personal`) needs the client's `store`: those parameters start from the
        client's own newest version before `round_num` (the global values the first time), are saved there as
        the version of `round_num` after training, and are not in the update.
        With a `local_test` split (personalised evaluation, on evaluation rounds), the metrics also carry
        `local_test.global`: the task's headline metric of the received global model on it, before training, and,
        for a plan with personal parts, `local_test.personal`: of the client's model after training (its personal
        parts included); `local_test.samples`: the split's size.
        A client the run makes hostile (`attack:`, `fedhello.training.attack`) sends a poisoned version of its
        trained tensors."""
        started = time.perf_counter()
        if self.config.record_resources:
            self._warm_up(data)
        load_state(self.model, global_state)
        scores: dict[str, float] = {}
        if local_test is not None:
            scores[f"{LOCAL_TEST}samples"] = float(len(local_test))
            scores[f"{LOCAL_TEST}global"], spent = self._score(local_test)
            started += spent
        if plan.personal:
            if store is None:
                raise ValueError("a plan with personal parts needs the client's store (LocalTrainer.train(store=...))")
            own = store.load(client_id, round_num)
            if own is not None:
                load_state(self.model, own)
        if plan.ranks:  # rank-heterogeneous methods: this client is a rank-r adapter on those layers
            zero_beyond_rank(self.model, self.layout, plan.ranks)
        meter = None
        if self.config.record_resources:
            meter = meter_for(next(self.model.parameters()).device)
            meter.start()
        names = freeze_for_plan(self.model, self.layout, plan)
        recompute = self.num_layers if self.config.gradient_checkpointing else plan.recompute
        blocks = recomputed_blocks(plan.layers, recompute, self.num_layers)
        if blocks:
            set_recompute(self.model, blocks)
        try:
            self.hook.before_training(plan)
            # FedProx: the values the client starts its round from (every phase is pulled toward the same ones)
            anchor = self._snapshot(names) if self.config.proximal_mu > 0 else None
            stats = _Stats()
            for phase, max_steps in self.hook.phases(plan, names):
                stats.add(self._optimize(phase, data, seed, meter, lr, max_steps=max_steps, anchor=anchor))
        finally:  # the shared model must be the method's no more (and keep its activations) even when training fails
            self.hook.after_training(plan)
            if blocks:
                set_recompute(self.model, ())
        if local_test is not None and plan.personal:
            scores[f"{LOCAL_TEST}personal"], spent = self._score(local_test)
            started += spent
        tensors = extract_state(self.model, names)
        metrics = self.hook.finish_update(plan, tensors)
        if plan.personal:  # kept on the client, never sent
            kept = {n: tensors.pop(n) for n in list(tensors) if _part(n, self.layout) in plan.personal}
            store.save(client_id, round_num, kept)  # type: ignore[union-attr]  (checked above)
        if plan.ranks:  # upload only the client's rank-r factors
            tensors = {n: truncate(n, t, plan.ranks.get(self.layout[n])) for n, t in tensors.items()}
        tensors, private = privatize_upload(tensors, global_state, plan, self.task.config.privacy, seed)
        metrics = {**metrics, **private}
        run = self.task.config
        if client_id in hostile_clients(run):  # a simulated hostile client (`attack:`): it controls what it sends
            tensors = poison(run.attack, tensors, global_state, run.seed, round_num, client_id)
        update = ClientUpdate(client_id=client_id, plan=plan, tensors=tensors, num_samples=len(data))
        update.metrics = {
            "train_loss": stats.loss_sum / stats.weight_sum if stats.weight_sum > 0 else 0.0,
            "steps": float(stats.steps),
            "seconds": time.perf_counter() - started,
            "bytes_up": float(update.num_bytes),
            **metrics,
            **scores,
            **{f"{GRAD_NORM}{k}": (float(v) / max(stats.steps, 1)) ** 0.5 for k, v in sorted(stats.grad_sq.items())},
        }
        if meter is not None:  # the first step pays one-off costs (optimizer state), so the median skips it
            peak = meter.peak_mb()
            update.metrics["step_seconds"] = statistics.median(stats.step_times[1:] or stats.step_times or [0.0])
            update.metrics["step_cpu_seconds"] = statistics.median(stats.step_cpu[1:] or stats.step_cpu or [0.0])
            update.metrics["weights_mb"] = self.weights_mb
            if peak is not None:
                update.metrics["peak_mem_mb"] = peak
                update.metrics["total_mem_mb"] = self.weights_mb + peak
        return update

    def _snapshot(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Detached copies of the parameters `names`, on their device."""
        params = dict(self.model.named_parameters())
        return {n: params[n].detach().clone() for n in names}

    def _score(self, data: Dataset) -> tuple[float, float]:
        """The task's headline metric (accuracy; ROUGE-L for a causal LM) of the model as it is, on `data`, and the
        seconds that took (not counted as training time)."""
        started = time.perf_counter()
        value = float(self.task.evaluate(self.model, data)["accuracy"])
        return value, time.perf_counter() - started

    def _optimize(
        self,
        names: list[str],
        data: Dataset,
        seed: int,
        meter: MemoryMeter | None,
        lr: float | None = None,
        max_steps: int | None = None,
        anchor: dict[str, torch.Tensor] | None = None,
    ) -> _Stats:
        """AdamW over the parameters `names` for the configured epochs / steps (`max_steps`: another cap); the
        model is changed in place. With an `anchor` (FedProx, `train.proximal_mu`), every step adds the proximal
        term of `names` to the loss."""
        max_steps = max_steps or self.config.max_steps
        params = dict(self.model.named_parameters())
        groups = [{"params": [params[n] for n in names]}, *self.hook.extra_param_groups()]
        optimizer = torch.optim.AdamW(
            groups, lr=self.config.lr if lr is None else lr, weight_decay=self.config.weight_decay
        )
        layer_of = {n: self.layout[n] for n in names if self.layout[n] != HEAD}
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)  # dropout masks
        loader = DataLoader(
            data, batch_size=self.config.batch_size, shuffle=True, generator=generator, collate_fn=self.task.collate
        )
        device = next(self.model.parameters()).device
        scaler = torch.amp.GradScaler("cuda") if self.config.precision == "fp16" else None
        self.model.train()
        stats = _Stats()
        optimizer.zero_grad(set_to_none=True)
        step_clock, cpu_clock = time.perf_counter(), time.process_time()
        for _ in range(self.config.local_epochs):
            for group in micro_batch_groups(loader, self.config.grad_accum):
                # each micro-batch's mean loss counts by how many terms it averages (samples; predicted tokens
                # for a causal LM), so a short last micro-batch weighs no more per sample than the others and
                # the accumulated gradient is the full batch's
                weights = [float(self.task.loss_weight(batch)) for batch in group]
                total = sum(weights)
                for batch, weight in zip(group, weights, strict=True):
                    batch = {k: v.to(device) for k, v in batch.items()}
                    with autocast(device, self.config.precision):
                        loss = self.task.loss(self.model, batch)
                    scaled = loss * (weight / total) if total > 0 else loss / len(group)
                    (scaler.scale(scaled) if scaler else scaled).backward()
                    stats.loss_sum += loss.item() * weight
                    stats.weight_sum += weight
                extra = self.hook.loss_term()  # the method's own term, once per step (e.g. ARD-LoRA's l1 + TV)
                if extra is not None:
                    (scaler.scale(extra) if scaler else extra).backward()
                if anchor is not None:  # once per step too: the micro-batch losses above sum to the batch's
                    trained, start = [params[n] for n in names], [anchor[n] for n in names]
                    prox = proximal_term(trained, start, self.config.proximal_mu)
                    (scaler.scale(prox) if scaler else prox).backward()
                if scaler:
                    scaler.unscale_(optimizer)
                _accumulate_layer_norms(stats.grad_sq, params, layer_of)
                if self.config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_([params[n] for n in names], self.config.max_grad_norm)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                stats.steps += 1
                if meter is not None:
                    stats.step_times.append(time.perf_counter() - step_clock)
                    stats.step_cpu.append(time.process_time() - cpu_clock)
                    step_clock, cpu_clock = time.perf_counter(), time.process_time()
                if max_steps and stats.steps >= max_steps:
                    break
            if max_steps and stats.steps >= max_steps:
                break
        optimizer.zero_grad(set_to_none=True)
        return stats


def proximal_term(params: list[torch.Tensor], anchors: list[torch.Tensor], mu: float) -> torch.Tensor:
    """FedProx's proximal term (Li et al. 2020): (mu / 2) * sum of ||w - w_start||^2 over the trained parameters,
    which keeps a client's update near the weights it started its round from. Not part of the reported loss."""
    squares = [(p - a).pow(2).sum() for p, a in zip(params, anchors, strict=True)]
    return 0.5 * mu * torch.stack(squares).sum()


def _part(name: str, layout: dict[str, int]) -> str | None:
    """Which kind of part (`plan.PERSONAL_KINDS`) a trained parameter is."""
    return "head" if layout[name] == HEAD else lora_factor(name)


def _accumulate_layer_norms(
    totals: dict[int, torch.Tensor], params: dict[str, torch.nn.Parameter], layer_of: dict[str, int]
) -> None:
    """Add each trained layer's squared gradient norm of this step (before clipping) to `totals`, in float64.
    The sums stay tensors on the model's device, so the step loop never waits for the device to report a
    number; the trainer reads them once, after training."""
    step: dict[int, torch.Tensor] = {}
    for name, layer in layer_of.items():
        grad = params[name].grad
        if grad is not None:
            square = grad.detach().float().pow(2).sum().double()
            step[layer] = step[layer] + square if layer in step else square
    for layer, value in step.items():
        totals[layer] = totals[layer] + value if layer in totals else value
