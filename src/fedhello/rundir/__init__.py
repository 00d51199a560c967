"""The run folder: the one module that knows its file names, writes them and reads them back.

  config.yaml       resolved configuration (every default filled in)
  metrics.jsonl     one JSON object per round (the round record every observer receives; lm-eval scores
                    are its `lm_eval.<task>.<metric>` keys)
  allocations.csv   round, client, tier, layers trained
  importance.jsonl  FIM scores, levels and probabilities at each refresh
  summary.json      best/final accuracy and totals (written last: a run folder with it is finished)
  partition.json    label counts, tier and budget of every client
  adapter/          final global adapter (`PeftModel.from_pretrained(base, RUN_DIR/adapter)`) and the class
                    names (labels.json); `fedhello export` makes a self-contained folder of it
  accuracy.png      test accuracy per round (`output.plot`)
  checkpoint/       the latest checkpoint (`fedhello.server.checkpoint`)
  report/           report.html and its PNGs (`fedhello report`)
  tensorboard/, mlruns/   the `output.loggers` tensorboard and mlflow (file store) logs
  flower.log, flower-logs/  Flower engines: lost clients; the SuperLink/SuperNode logs of a failed deployment

`files` holds the names, the atomic write and the tolerant readers, `writer` the observer that writes a
run as it goes, `reader` what the report, `fedhello compare` and `fedhello profile --check` read back.
"""

from fedhello.rundir.files import (
    ACCURACY_PLOT,
    ADAPTER_DIR,
    ADAPTER_LABELS_FILE,
    ALLOCATIONS_FILE,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    ERROR_LOG,
    FLOWER_LOG,
    FLOWER_LOGS_DIR,
    IMPORTANCE_FILE,
    LM_EVAL_PREFIX,
    LOG_FILES,
    METRICS_FILE,
    MLFLOW_DIR,
    PARTITION_FILE,
    REPORT_DIR,
    SUMMARY_FILE,
    TENSORBOARD_DIR,
    log_sizes,
    new_run_dir,
    read_json,
    read_jsonl,
    truncate_logs,
    write_atomic,
)
from fedhello.rundir.reader import RunData, as_number, load_run, read_metrics, read_summary, tier_summary
from fedhello.rundir.writer import RunWriter, summarize

__all__ = [
    "ACCURACY_PLOT",
    "ADAPTER_DIR",
    "ADAPTER_LABELS_FILE",
    "ALLOCATIONS_FILE",
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "ERROR_LOG",
    "FLOWER_LOG",
    "FLOWER_LOGS_DIR",
    "IMPORTANCE_FILE",
    "LM_EVAL_PREFIX",
    "LOG_FILES",
    "METRICS_FILE",
    "MLFLOW_DIR",
    "PARTITION_FILE",
    "REPORT_DIR",
    "SUMMARY_FILE",
    "TENSORBOARD_DIR",
    "RunData",
    "RunWriter",
    "as_number",
    "load_run",
    "tier_summary",
    "log_sizes",
    "new_run_dir",
    "read_json",
    "read_jsonl",
    "read_metrics",
    "read_summary",
    "summarize",
    "truncate_logs",
    "write_atomic",
]
