"""`output.loggers: [tensorboard]`: round metrics, importance refreshes and the config as TensorBoard
events in RUN_DIR/tensorboard (`tensorboard --logdir RUN_DIR/tensorboard`)."""

from __future__ import annotations

import json
from typing import Any

import yaml

from fedhello.events import RunObserver, RunStart
from fedhello.loggers.base import LOGGERS, require, scalars
from fedhello.rundir import TENSORBOARD_DIR


@LOGGERS.register("tensorboard")
class TensorBoardLogger(RunObserver):
    """Scalars `round/<metric>` per round (step = round), `importance/score|probability/layer_<i>` at each
    FIM refresh, the resolved config and the summary as text."""

    def __init__(self) -> None:
        require("tensorboard", "tensorboard", "tensorboard")
        self.writer: Any = None

    def on_run_start(self, start: RunStart) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run drops the events it logged after its checkpoint
        purge = start.resumed_from + 1 if start.resumed_from else None
        self.writer = SummaryWriter(str(start.run_dir / TENSORBOARD_DIR), purge_step=purge)
        config = yaml.safe_dump(start.config.model_dump(mode="json"), sort_keys=False)
        self.writer.add_text("config", f"```\n{config}```", global_step=start.resumed_from or 0)

    def on_importance(self, record: dict[str, Any]) -> None:
        for name, key in (("score", "scores"), ("probability", "probabilities")):
            for layer, value in enumerate(record.get(key, [])):
                self.writer.add_scalar(f"importance/{name}/layer_{layer}", value, global_step=record["round"])

    def on_round_end(self, record: dict[str, Any]) -> None:
        for key, value in scalars(record).items():
            self.writer.add_scalar(f"round/{key}", value, global_step=record["round"])
        self.writer.add_scalar("round/clients", len(record.get("clients", [])), global_step=record["round"])

    def on_run_end(self, summary: dict[str, Any]) -> None:
        self.writer.add_text("summary", f"```\n{json.dumps(summary, indent=2)}\n```", global_step=summary["rounds"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
