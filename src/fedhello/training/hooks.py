"""The client side of a method: what `LocalTrainer` lets a method do around one client's training.

A strategy declares its hook class (`Allocator.client_hook`); the trainer builds it once per model with the run's
strategy options and calls, for every client it trains:

  before_training(plan)                 after the client's starting state is loaded and its plan frozen in,
                                        before the first step (e.g. HetLoRA rescales a rank-r adapter)
  phases(plan, names)                   the optimisation phases: which of the trained parameters each one
                                        trains and its step cap (default: one phase, all of them; pFedLoRA
                                        alternates its personal and shared parts)
  after_training(plan)                  after the last step, also when training failed (undo what
                                        before_training changed on the shared model)
  finish_update(plan, tensors)          the trained tensors about to be sent (full-rank, may be changed in
                                        place, e.g. self-pruned); returns the metrics to report with them

and, while it trains (between before_training and after_training):

  extra_param_groups()                  parameters of the method's own to optimise with the LoRA factors
                                        (e.g. ARD-LoRA's rank gates), as optimizer param groups
  loss_term()                           a term added to the loss once per optimizer step (e.g. a regulariser
                                        on those parameters), or None

Every default does nothing, so a method without client-side behaviour needs no hook. A hook holds no per-client
state: one trainer serves many clients in turn. What a client keeps between rounds (`Plan.personal`) the trainer
loads and saves itself, in the client's store (`fedhello.training.store`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from fedhello.plan import Plan

if TYPE_CHECKING:
    from fedhello.config import StrategyConfig


class ClientHook:
    """No client-side behaviour (the default of every strategy). Subclasses override the hooks above."""

    def __init__(self, options: StrategyConfig, model: torch.nn.Module, layout: dict[str, int]) -> None:
        self.options = options
        self.model = model
        self.layout = layout

    def before_training(self, plan: Plan) -> None:
        """Prepare the shared model for this client's plan (its starting state is loaded)."""
        return None

    def phases(self, plan: Plan, names: list[str]) -> list[tuple[list[str], int | None]]:
        """The optimisation phases, in order: (parameter names trained, step cap or None for `train:`'s own).
        Each phase is a fresh optimizer over its names (a subset of `names`, the plan's trained parameters) and
        sees the client's data for `train.local_epochs` epochs; the default is one phase over all of them."""
        return [(names, None)]

    def after_training(self, plan: Plan) -> None:
        """Undo `before_training` on the shared model; called even when training raised."""
        return None

    def finish_update(self, plan: Plan, tensors: dict[str, torch.Tensor]) -> dict[str, float]:
        """Change the trained `tensors` in place before they are sent; return metrics to report."""
        return {}

    def extra_param_groups(self) -> list[dict[str, Any]]:
        """Optimizer param groups (`{"params": [...], "lr": ..., ...}`) of parameters the method adds for this
        client's training; keys a group leaves out take the trainer's (lr, weight decay). They are optimised with
        the plan's parameters but neither clipped nor uploaded: the hook folds what they hold into the upload
        (`finish_update`) or drops it. Read once per client, after `before_training`."""
        return []

    def loss_term(self) -> torch.Tensor | None:
        """A scalar added to the loss once per optimizer step (after the step's micro-batches, not weighted by
        them), e.g. a regulariser on `extra_param_groups`; None adds nothing. Not part of the reported
        train_loss."""
        return None
