"""Standard LLM benchmarks on the global adapter, through lm-evaluation-harness (`eval.lm_eval_*`).

The server scores the model it holds -- the base weights with the aggregated LoRA adapter loaded, no copy
on disk -- with `lm_eval.simple_evaluate` after the last round and, with `eval.lm_eval_every: N`, every N
rounds. Every number lm-eval reports lands in the round's record as `lm_eval.<task>.<metric>`, e.g.
`lm_eval.arc_easy.acc`, `lm_eval.arc_easy.acc_stderr` (a metric of a filter other than lm-eval's default
"none" is `<metric>/<filter>`), with `lm_eval.<task>.samples`, the documents it scored.

Everything a user can get wrong is checked when the scorer is built, before the model loads: the lm_eval
package, the include folder, the task names (glob patterns such as `mmlu_*` are expanded) and each task's
data. lm_eval is imported only then: it costs seconds, and runs without benchmarks never pay them.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import math
import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedhello.config import RunConfig
from fedhello.errors import ConfigError
from fedhello.models.precision import autocast
from fedhello.rundir import LM_EVAL_PREFIX
from fedhello.tasks.causal_lm import CausalLMTask

TASKS_FIELD = "eval.lm_eval_tasks"
INSTALL_FIX = "pip install 'fedhello[llm]'"


def metric_key(task: str, metric: str) -> str:
    """The record key of one lm-eval number; the metric part has no dot, so the task is all before the last one."""
    return f"{LM_EVAL_PREFIX}{task}.{metric.replace('.', '_')}"


def flatten_results(output: dict[str, Any]) -> dict[str, float]:
    """`simple_evaluate`'s output as record entries: every finite number of every task and group, keyed by
    `metric_key` ("acc,none" -> acc; "exact_match,strict-match" -> exact_match/strict-match), and the number of
    documents scored. Strings (aliases, a stderr lm-eval could not compute: "N/A") are left out."""
    scores: dict[str, float] = {}
    for task, values in output.get("results", {}).items():
        for name, value in values.items():
            if "," not in name or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if not math.isfinite(value):
                continue
            metric, filter_name = name.split(",", 1)
            scores[metric_key(task, metric if filter_name == "none" else f"{metric}/{filter_name}")] = float(value)
    for task, counts in output.get("n-samples", {}).items():
        if isinstance(counts, dict) and isinstance(counts.get("effective"), int):
            scores[metric_key(task, "samples")] = float(counts["effective"])
    return scores


@contextlib.contextmanager
def kept_random_state(device: torch.device) -> Iterator[None]:
    """`simple_evaluate` seeds Python's, NumPy's and torch's global generators; put them back afterwards, so a
    run trains and checkpoints exactly as it would without benchmarks."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _import_lm_eval() -> Any:  # noqa: ANN401 - the lm_eval module
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager  # noqa: F401 - the part a broken install fails on first
    except ImportError as err:
        raise ConfigError(TASKS_FIELD, f"lm-eval benchmarks need the lm_eval package ({err})", INSTALL_FIX) from err
    return lm_eval


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _expand(manager: Any, names: list[str]) -> dict[str, list[str]]:  # noqa: ANN401 - lm_eval's TaskManager
    return {name: manager.match_tasks([name]) for name in names}


def _self_contained(index: dict[str, Any], names: list[str]) -> bool:
    """Whether `names` and, through groups, every task they list are in `index` (a local group may list
    lm-eval's own tasks, which then need the full index)."""
    pending, seen = list(names), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in index:
            return False
        config = index[name].cfg or {}
        members = config.get("task") if "group" in config else None
        if isinstance(members, list):  # inline task configs (dicts) are defined where they stand
            pending += [m for m in members if isinstance(m, str)]
    return True


def check_tasks_load(manager: Any, tasks: list[str]) -> None:  # noqa: ANN401 - lm_eval's TaskManager
    """Build every task once, which reads its data, so a missing file or an unreachable hub stops the run
    before training rather than after the last round."""
    for name in tasks:
        try:
            manager.load([name])
        except Exception as err:  # noqa: BLE001 - whatever lm-eval or datasets raise, the user gets one line
            raise ConfigError(
                TASKS_FIELD,
                f"lm-eval task '{name}' could not be loaded ({_first_line(err)})",
                "hub tasks need the hub or its cache; a local task's data_files are read relative to the "
                "working directory (absolute paths are safest)",
            ) from err


def resolve_tasks(names: list[str], include_path: str | None) -> tuple[Any, list[str]]:
    """lm-eval's `TaskManager` and the configured task names, glob patterns expanded, every task loaded once
    (`check_tasks_load`); an unknown name is a `ConfigError`. The index of lm-eval's own ~14k task YAMLs takes
    seconds to build: when every name (and every task a local group lists) is local, only `include_path` is
    indexed."""
    from lm_eval.tasks import TaskManager

    if include_path is not None and not Path(include_path).is_dir():
        raise ConfigError(
            "eval.lm_eval_include_path",
            f"'{include_path}' is not a folder",
            "give the folder holding your task YAMLs, or leave it unset for lm-eval's own tasks",
        )
    if include_path is not None:
        local = TaskManager(include_path=include_path, include_defaults=False)
        matched = _expand(local, names)
        tasks = list(dict.fromkeys(t for name in names for t in matched[name]))
        if all(matched.values()) and _self_contained(local.task_index, tasks):
            check_tasks_load(local, tasks)
            return local, tasks
    manager = TaskManager(include_path=include_path)
    matched = _expand(manager, names)
    unknown = [name for name, found in matched.items() if not found]
    if unknown:
        close = difflib.get_close_matches(unknown[0], manager.all_tasks, n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        where = f" or in the task YAMLs of '{include_path}'" if include_path else ""
        raise ConfigError(
            TASKS_FIELD,
            f"unknown lm-eval task {', '.join(repr(n) for n in unknown)}{hint}: not among lm-eval's tasks{where}",
            "use a name `lm-eval ls tasks` lists, or set eval.lm_eval_include_path to the folder of a YAML "
            "whose `task:` is that name",
        )
    tasks = list(dict.fromkeys(t for name in names for t in matched[name]))
    check_tasks_load(manager, tasks)
    return manager, tasks


class LMEvalScorer:
    """Scores a causal LM on the configured lm-eval tasks; built once per run, on the server."""

    def __init__(self, config: RunConfig) -> None:
        settings = config.eval
        self.settings = settings
        self.rounds = config.federation.rounds
        self.precision = config.train.precision
        self.lm_eval = _import_lm_eval()
        self.task_manager, self.tasks = resolve_tasks(settings.lm_eval_tasks, settings.lm_eval_include_path)
        self._tokenizer: Any = None

    def due(self, round_num: int) -> bool:
        """Whether the tasks are scored after `round_num`: the last round, and every `lm_eval_every`-th."""
        every = self.settings.lm_eval_every
        return round_num == self.rounds or (every > 0 and round_num % every == 0)

    def score(self, model: torch.nn.Module, task: CausalLMTask) -> dict[str, float]:
        """The record entries of `model` (a peft model, its adapter loaded) on every task. A failure here is a
        warning with no scores, not a lost run: training is done and the adapter is still to be saved."""
        from lm_eval.models.huggingface import HFLM

        if self._tokenizer is None:  # lm-eval gives a tokenizer without one a pad token: not the task's own
            self._tokenizer = copy.deepcopy(task.tokenizer)
        settings = self.settings
        device = next(model.parameters()).device
        try:
            with kept_random_state(device), autocast(device, self.precision):
                lm = HFLM(pretrained=model, tokenizer=self._tokenizer, batch_size=settings.lm_eval_batch_size)
                output = self.lm_eval.simple_evaluate(
                    model=lm,
                    tasks=self.tasks,
                    num_fewshot=settings.lm_eval_num_fewshot,
                    limit=settings.lm_eval_limit,
                    task_manager=self.task_manager,
                    log_samples=False,
                )
        except Exception as err:  # noqa: BLE001 - see the docstring
            warnings.warn(f"lm-eval scoring failed, no lm_eval scores this round: {_first_line(err)}", stacklevel=2)
            return {}
        return flatten_results(output or {})


def lm_eval_scorer(config: RunConfig) -> LMEvalScorer | None:
    """The run's scorer, or None when `eval.lm_eval_tasks` is empty (lm_eval is then never imported)."""
    return LMEvalScorer(config) if config.eval.lm_eval_tasks else None
