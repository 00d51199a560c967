"""Round events reach every observer: the TensorBoard and MLflow loggers write what the run folder holds (read
back from their own files), a user's observer hears every event in order, and a missing logger package is a
one-line error naming `output.loggers` and the pip command."""

from __future__ import annotations

import sys

import pytest
from typer.testing import CliRunner

from fedhello.cli import app
from fedhello.engines import ENGINES
from fedhello.errors import ConfigError
from fedhello.events import RunObserver
from fedhello.loggers import LOGGERS
from fedhello.rundir import MLFLOW_DIR, TENSORBOARD_DIR, read_metrics


class Recorder(RunObserver):
    """A user's own observer: one small class."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_run_start(self, start):  # noqa: ANN001, ANN201
        self.events.append(("start", start.resumed_from))

    def on_importance(self, record):  # noqa: ANN001, ANN201
        self.events.append(("importance", record["round"]))

    def on_evaluate(self, round_num, metrics):  # noqa: ANN001, ANN201
        self.events.append(("evaluate", round_num, metrics["accuracy"]))

    def on_round_end(self, record):  # noqa: ANN001, ANN201
        self.events.append(("round", record))

    def on_run_end(self, summary):  # noqa: ANN001, ANN201
        self.events.append(("end", summary["rounds"]))

    def close(self):  # noqa: ANN201
        self.events.append(("close",))


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory, tiny_model_dir, tiny_data_dir):  # noqa: ANN001, ANN201
    """A 2-round tiny run with both loggers on and a user's observer (FIM refresh before round 2)."""
    from fedhello.config import config_from_dict

    run_dir = tmp_path_factory.mktemp("logged") / "run"
    config = config_from_dict(
        {
            "name": "tiny-logged",
            "seed": 3,
            "model": {"name_or_path": str(tiny_model_dir), "max_length": 16},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "data": {"source": "hf", "path": str(tiny_data_dir), "proxy_size": 16, "test_size": 0.25},
            "partition": {"kind": "iid"},
            "federation": {"num_clients": 6, "clients_per_round": 3, "rounds": 2},
            "tiers": [{"share": "1/3", "layers": 1}, {"share": "1/3", "layers": 2}, {"share": "1/3", "layers": 4}],
            "strategy": {"name": "fim+gd", "fim_warmup": 1, "fim_every": 1},
            "train": {"batch_size": 8, "lr": 0.03},
            "output": {"plot": False, "save_adapter": False, "loggers": ["tensorboard", "mlflow"]},
        }
    )
    recorder = Recorder()
    summary = ENGINES.get("local")().run(config, run_dir, show_progress=False, observers=[recorder])
    return run_dir, summary, recorder


def test_tensorboard_events_hold_every_round(logged_run):  # noqa: ANN001
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, _ = logged_run
    records = read_metrics(run_dir)
    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    events.Reload()
    accuracy = events.Scalars("round/accuracy")
    assert [e.step for e in accuracy] == [1, 2]
    assert [e.value for e in accuracy] == pytest.approx([r["accuracy"] for r in records])
    assert [e.value for e in events.Scalars("round/bytes_up")] == [float(r["bytes_up"]) for r in records]
    assert [e.step for e in events.Scalars("importance/probability/layer_0")] == [2]
    assert {"config/text_summary", "summary/text_summary"} <= set(events.Tags()["tensors"])


def test_mlflow_run_holds_params_metrics_and_status(logged_run, monkeypatch):  # noqa: ANN001
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks readers of a file store to opt in
    run_dir, summary, _ = logged_run
    records = read_metrics(run_dir)
    client = MlflowClient(tracking_uri=(run_dir / MLFLOW_DIR).resolve().as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("tiny-logged").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    assert run.data.params["strategy.name"] == "fim+gd" and run.data.params["federation.rounds"] == "2"
    history = client.get_metric_history(run.info.run_id, "accuracy")
    assert [(m.step, m.value) for m in history] == [(r["round"], pytest.approx(r["accuracy"])) for r in records]
    assert run.data.metrics["summary.best_accuracy"] == pytest.approx(summary["best_accuracy"])


def test_a_users_observer_hears_every_event_in_order(logged_run):  # noqa: ANN001
    run_dir, _, recorder = logged_run
    kinds = [e[0] for e in recorder.events]
    assert kinds == ["start", "evaluate", "round", "importance", "evaluate", "round", "end", "close"]
    assert recorder.events[0] == ("start", None)
    # the round record every observer gets is the line metrics.jsonl holds
    assert [e[1] for e in recorder.events if e[0] == "round"] == read_metrics(run_dir)


def test_unknown_or_missing_logger_is_one_line_naming_the_field(monkeypatch, tiny_config, tmp_path):  # noqa: ANN001
    with pytest.raises(ConfigError, match="output.loggers.*unknown logger 'wandb'.*mlflow, tensorboard"):
        LOGGERS.get("wandb")
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if the package were not installed
    with pytest.raises(ConfigError, match="output.loggers.*pip install tensorboard"):
        LOGGERS.get("tensorboard")()

    import yaml

    tree = tiny_config.model_dump(mode="json")
    tree["output"]["loggers"] = ["tensorboard"]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"])
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("run folder:")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "output.loggers" in lines[0] and "pip install tensorboard" in lines[0]
    assert not (tmp_path / "run" / "metrics.jsonl").exists(), "nothing ran"
