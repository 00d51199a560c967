"""`output.loggers: [mlflow]`: one MLflow run per fedhello run, in a local file store (RUN_DIR/mlruns) or
at `output.mlflow_uri`. Parameters are the resolved config (dotted keys), metrics the round records'
scalars (step = round), plus the summary's numbers at the end."""

from __future__ import annotations

import os
import time
from typing import Any

from fedhello.config import flatten
from fedhello.events import RunObserver, RunStart
from fedhello.loggers.base import LOGGERS, require, scalars
from fedhello.rundir import MLFLOW_DIR

_BATCH = 100  # MLflow accepts at most 100 params (and 1000 metrics) per log_batch call


@LOGGERS.register("mlflow")
class MLflowLogger(RunObserver):
    """The experiment is the config's `name`; the run is named after the run folder and tagged with it."""

    def __init__(self) -> None:
        require("mlflow", "mlflow-skinny", "mlflow")
        self.client: Any = None
        self.run_id: str | None = None
        self.finished = False

    def on_run_start(self, start: RunStart) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = start.config.output.mlflow_uri or (start.run_dir / MLFLOW_DIR).resolve().as_uri()
        if uri.startswith("file:"):  # MLflow 3 keeps the file store behind an opt-in (readers need it too)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = start.config.name
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        tags = {"fedhello.run_dir": str(start.run_dir), "fedhello.resumed_from": str(start.resumed_from)}
        run = self.client.create_run(experiment_id, run_name=start.run_dir.name, tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, str(v)) for k, v in flatten(start.config.model_dump(mode="json")).items()]
        for i in range(0, len(params), _BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + _BATCH])

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def on_importance(self, record: dict[str, Any]) -> None:
        values = {f"importance.probability.layer_{i}": p for i, p in enumerate(record.get("probabilities", []))}
        self._log(values, record["round"])

    def on_round_end(self, record: dict[str, Any]) -> None:
        self._log(scalars(record), record["round"])

    def on_run_end(self, summary: dict[str, Any]) -> None:
        self._log({f"summary.{k}": v for k, v in scalars(summary).items()}, summary["rounds"])
        self.client.set_terminated(self.run_id, "FINISHED")
        self.finished = True

    def close(self) -> None:
        if self.run_id is not None and not self.finished:
            self.client.set_terminated(self.run_id, "FAILED")
            self.finished = True
