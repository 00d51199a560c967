"""The in-process engine: one model, clients trained one after another in this process.

Memory does not grow with the number of registered clients: a client is a partition index and a tier,
and its data is an index selection loaded when it is sampled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fedhello.config import RunConfig
from fedhello.engines.base import ENGINES, Engine, RunOptions
from fedhello.plan import ClientUpdate, Plan
from fedhello.seeding import client_seed
from fedhello.server import Coordinator, build_federation
from fedhello.server.loop import partition_sizes, run_rounds
from fedhello.server.observers import run_observers
from fedhello.tasks.lm_eval_scorer import lm_eval_scorer
from fedhello.training import TrainerPool
from fedhello.training.schedule import round_lr


@ENGINES.register("local")
class LocalEngine(Engine):
    def execute(self, config: RunConfig, run_dir: Path, options: RunOptions) -> dict[str, Any]:
        # the observers come before the model: a logger whose package is missing fails fast
        observers = run_observers(config, options.show_progress, options.observers)
        scorer = lm_eval_scorer(config)  # lm-eval tasks and their data are checked before the model loads
        federation = build_federation(config)
        coordinator = Coordinator(federation, scorer=scorer)
        trainers = TrainerPool(
            federation.task, federation.model, config.model.quantization, federation.layout, config.train
        )

        def dispatch(round_num: int, plans: dict[int, Plan], state: dict[str, torch.Tensor]) -> list[ClientUpdate]:
            lr = round_lr(config.train, round_num, config.federation.rounds)
            return [
                trainers.trainer(federation.client_quantization(cid)).train(
                    cid, plan, state, federation.client_data(cid), client_seed(config.seed, round_num, cid), lr=lr
                )
                for cid, plan in plans.items()
            ]

        # the clients' data are this process's own partitions: their sample counts are known, not claimed
        counts = partition_sizes(federation)
        return run_rounds(
            federation, coordinator, dispatch, run_dir, observers, resume=options.resume, sample_counts=counts
        )
