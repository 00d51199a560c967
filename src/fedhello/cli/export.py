"""`fedhello export RUN_DIR OUT_DIR`: the run's global adapter as a folder that peft's Auto classes load from
any working directory, e.g. `AutoPeftModelForSequenceClassification.from_pretrained(OUT_DIR)`.

A run's `adapter/` names its base by the path the run was given, and a classifier's base has no head of the
run's classes, so it loads only beside a base model built by hand. The export holds what loading needs:

- classification (a head sized by the run's classes): the base weights with a `config.json` that carries
  `num_labels`, `id2label` and `label2id`, and `adapter_config.json` naming OUT_DIR itself by absolute path
  (the base weights are copied once: transformers reads a model's config and weights from one folder);
- causal LM: `adapter_config.json` naming the base by absolute path (the embedded model's package folder, a
  local folder) or by hub id; no copy;
- always the adapter (`adapter_model.safetensors`, peft's `task_type` set), the tokenizer (or image
  processor) beside it, and `export.json`: where it came from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from fedhello.config import load_config
from fedhello.errors import FedHelloError
from fedhello.models.build import load_pretrained, resolve_model_path
from fedhello.rundir import ADAPTER_DIR, ADAPTER_LABELS_FILE, CONFIG_FILE, PARTITION_FILE, read_json, read_summary
from fedhello.tasks import TASKS

ADAPTER_CONFIG = "adapter_config.json"
EXPORT_NOTE = "export.json"


def run_label_names(run_dir: Path) -> list[str]:
    """The run's class names in label-id order: adapter/labels.json, else (runs written before it existed)
    partition.json's; [] when neither has them."""
    for path in (run_dir / ADAPTER_DIR / ADAPTER_LABELS_FILE, run_dir / PARTITION_FILE):
        found = read_json(path)
        if isinstance(found, dict) and isinstance(found.get("label_names"), list):
            return [str(name) for name in found["label_names"]]
    return []


def export_adapter(run_dir: Path, out_dir: Path) -> Path:
    """Write the self-contained adapter folder of `run_dir` into `out_dir` (new or empty); returns it."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    adapter = run_dir / ADAPTER_DIR
    if not (run_dir / CONFIG_FILE).is_file():
        raise FedHelloError(f"argument 'RUN_DIR': '{run_dir}' is not a run folder (fix: pass the folder a run wrote)")
    if not (adapter / ADAPTER_CONFIG).is_file():
        raise FedHelloError(
            f"argument 'RUN_DIR': '{run_dir}' has no {ADAPTER_DIR}/ (fix: export a finished run that saved its "
            "adapter, output.save_adapter: true)"
        )
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FedHelloError(f"argument 'OUT_DIR': '{out_dir}' exists and is not empty (fix: name a new folder)")
    config = load_config(run_dir / CONFIG_FILE, saved=True)
    task = TASKS.get(config.task)
    adapter_config: dict[str, Any] = json.loads((adapter / ADAPTER_CONFIG).read_text())
    base_path = _base_path(adapter_config.get("base_model_name_or_path"), config.model.name_or_path)
    labels = run_label_names(run_dir) or list(config.data.label_names or [])
    out_dir.mkdir(parents=True, exist_ok=True)
    if task.labelled_head:
        if not labels:
            raise FedHelloError(
                f"argument 'RUN_DIR': '{run_dir}' records no class names (fix: set data.label_names in its "
                "config.yaml, in label-id order)"
            )
        _write_labelled_base(task, base_path, labels, out_dir)
        base_name = str(out_dir.resolve())
    else:
        base_name = base_path
    shutil.copy2(adapter / "adapter_model.safetensors", out_dir / "adapter_model.safetensors")
    adapter_config["base_model_name_or_path"] = base_name
    adapter_config["task_type"] = task.peft_task_type
    (out_dir / ADAPTER_CONFIG).write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
    if task.processor_class is not None:
        processor = load_pretrained(task.processor_class.from_pretrained, base_path, "the tokenizer or processor")
        processor.save_pretrained(str(out_dir))
    note = {
        "run_dir": str(run_dir.resolve()),
        "task": config.task,
        "base_model": config.model.name_or_path,
        "label_names": labels,
        "metric": (read_summary(run_dir) or {}).get("metric", task.metric),
    }
    (out_dir / EXPORT_NOTE).write_text(json.dumps(note, indent=2))
    return out_dir


def _base_path(recorded: str | None, configured: str) -> str:
    """The base the run trained on, as a name that resolves from anywhere: the folder the adapter recorded
    when it exists (made absolute: runs before this command recorded relative paths), else the config's
    `model.name_or_path` resolved (the embedded model's folder, an absolute local folder, a hub id)."""
    if recorded and Path(recorded).expanduser().is_dir():
        return str(Path(recorded).expanduser().resolve())
    return resolve_model_path(configured)


def _write_labelled_base(task: Any, base_path: str, labels: list[str], out_dir: Path) -> None:  # noqa: ANN401
    """The base model, in full precision, with a head of the run's classes and their names in config.json.
    The head's weights are the base's (or new); the adapter's trained head replaces them when it is loaded."""
    id2label = dict(enumerate(labels))
    base = load_pretrained(
        task.auto_model_class.from_pretrained,
        base_path,
        task.model_kind,
        num_labels=len(labels),
        id2label=id2label,
        label2id={name: i for i, name in id2label.items()},
        ignore_mismatched_sizes=True,
    )
    base.save_pretrained(str(out_dir))
