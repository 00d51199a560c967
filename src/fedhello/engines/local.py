"""The in-process engine: one model, clients trained one after another in this process.

Memory does not grow with the number of registered clients: a client is a partition index and a tier,
and its data is an index selection loaded when it is sampled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fedhello.config import RunConfig
from fedhello.data.local_test import local_test_due
from fedhello.engines.base import ENGINES, Engine, RunOptions
from fedhello.plan import ClientUpdate, Plan
from fedhello.rundir.files import CLIENTS_DIR
from fedhello.seeding import client_seed
from fedhello.server.loop import partition_sizes
from fedhello.server.resume import client_store
from fedhello.server.secure import InProcessSecureDispatch, secure_settings
from fedhello.server.startup import start_server
from fedhello.training import TrainerPool
from fedhello.training.schedule import round_lr


@ENGINES.register("local")
class LocalEngine(Engine):
    def execute(self, config: RunConfig, run_dir: Path, options: RunOptions) -> dict[str, Any]:
        server = start_server(config, options.show_progress, options.observers)
        federation = server.federation
        trainers = TrainerPool(
            federation.task, federation.model, config.model.quantization, federation.layout, config.train
        )

        store = client_store(run_dir / CLIENTS_DIR, run_dir, options.resume)  # personal state, in the run folder

        def dispatch(round_num: int, plans: dict[int, Plan], state: dict[str, torch.Tensor]) -> list[ClientUpdate]:
            lr = round_lr(config.train, round_num, config.federation.rounds)
            scores = local_test_due(config.federation, round_num)
            return [
                trainers.trainer(federation.client_quantization(cid)).train(
                    cid,
                    plan,
                    state,
                    federation.client_data(cid),
                    client_seed(config.seed, round_num, cid),
                    lr=lr,
                    round_num=round_num,
                    store=store,
                    local_test=federation.client_test(cid) if scores else None,
                )
                for cid, plan in plans.items()
            ]

        run_dispatch = dispatch
        if config.secure.enabled:  # the clients' changes reach the aggregation only as per-tensor sums
            run_dispatch = InProcessSecureDispatch(dispatch, server.uploads, secure_settings(config), config.seed)
        # the clients' data are this process's own partitions: their sample counts are known, not claimed
        return server.run(run_dispatch, run_dir, options.resume, partition_sizes(federation))
