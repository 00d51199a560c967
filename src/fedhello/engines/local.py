"""The in-process engine: one model, clients trained one after another in this process.

Memory does not grow with the number of registered clients: a client is a partition index and a tier,
and its data is an index selection loaded when it is sampled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fedhello.config import RunConfig
from fedhello.engines.base import ENGINES, Engine
from fedhello.events import RunObserver
from fedhello.plan import ClientUpdate, Plan
from fedhello.seeding import client_seed
from fedhello.server import Coordinator, build_federation
from fedhello.server.loop import partition_sizes, run_rounds
from fedhello.server.observers import run_observers
from fedhello.training import LocalTrainer
from fedhello.training.schedule import round_lr


@ENGINES.register("local")
class LocalEngine(Engine):
    def run(
        self,
        config: RunConfig,
        run_dir: Path,
        *,
        show_progress: bool = True,
        resume: bool = False,
        observers: Sequence[RunObserver] = (),
    ) -> dict[str, Any]:
        watchers = run_observers(config, show_progress, observers)  # before the model: a bad logger fails fast
        federation = build_federation(config)
        coordinator = Coordinator(federation)
        trainer = LocalTrainer(federation.model, federation.task, federation.layout, config.train)

        def dispatch(round_num: int, plans: dict[int, Plan], state: dict[str, torch.Tensor]) -> list[ClientUpdate]:
            lr = round_lr(config.train, round_num, config.federation.rounds)
            return [
                trainer.train(
                    cid, plan, state, federation.client_data(cid), client_seed(config.seed, round_num, cid), lr=lr
                )
                for cid, plan in plans.items()
            ]

        # the clients' data are this process's own partitions: their sample counts are known, not claimed
        counts = partition_sizes(federation)
        return run_rounds(federation, coordinator, dispatch, run_dir, watchers, resume=resume, sample_counts=counts)
