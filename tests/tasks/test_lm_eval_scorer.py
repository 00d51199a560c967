"""lm-eval benchmarks on the global adapter: local YAML tasks scored on a tiny GPT-2 in a federated run,
scores that follow the model's own preferences, and one-line errors for bad task settings. Offline: every
task is a local JSON one, and no test may open a network connection."""

from __future__ import annotations

import json
import random
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from fedhello.cli import app
from fedhello.config import RunConfig
from fedhello.engines import ENGINES
from fedhello.reporting.report import lm_eval_table
from fedhello.rundir import load_run
from fedhello.tasks.causal_lm import CausalLMTask
from fedhello.tasks.lm_eval_scorer import (
    LMEvalScorer,
    _self_contained,
    check_tasks_load,
    flatten_results,
    resolve_tasks,
)

REPO = Path(__file__).resolve().parents[2]

# questions and choices in the tiny GPT-2's word-level vocabulary (the Dolly-like data)
QUESTIONS = [
    ("answer a question about the river", ["music", "bread"]),
    ("the city is described here", ["planet", "river"]),
    ("this is a answer about the", ["bread", "city"]),
    ("answer a question about the music", ["river", "planet"]),
    ("the planet is described here", ["music", "city"]),
    ("this is a question about the bread", ["planet", "music"]),
]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub tasks are not tested: a connection attempt is a failure, not a silent download."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test of lm-eval tried the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def write_task(folder: Path, name: str, answers: list[int]) -> None:
    """A multiple-choice lm-eval task over QUESTIONS with the given correct choices, as a YAML and a JSONL."""
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / f"{name}.jsonl"
    rows = [{"question": q, "choices": c, "answer": a} for (q, c), a in zip(QUESTIONS, answers, strict=True)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    task = {
        "task": name,
        "dataset_path": "json",
        # the data set cache stays in the test's folder, not the user's ~/.cache
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(folder.parent / "hf-cache")},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{question}}",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))


def with_tasks(config: RunConfig, folder: Path, tasks: list[str], **settings: object) -> RunConfig:
    config = config.model_copy(deep=True)
    config.eval.lm_eval_tasks = tasks
    config.eval.lm_eval_include_path = str(folder)
    for key, value in settings.items():
        setattr(config.eval, key, value)
    return config


def test_scores_land_in_metrics_at_their_rounds_and_in_the_report(dolly_config, tmp_path):
    folder = tmp_path / "lm_eval_tasks"
    write_task(folder, "tiny_mc", [0, 1, 0, 1, 0, 1])
    config = with_tasks(dolly_config, folder, ["tiny_mc"], lm_eval_every=2, lm_eval_limit=4)
    config.federation.rounds, config.federation.eval_every = 3, 3
    run_dir = tmp_path / "run"
    ENGINES.get("local")().run(config, run_dir, show_progress=False)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    scored = {r["round"]: {k: v for k, v in r.items() if k.startswith("lm_eval.")} for r in records}
    # every 2 rounds and after the last one; a round lm-eval scores is also an evaluated round
    assert [bool(scored[r]) for r in (1, 2, 3)] == [False, True, True], scored
    assert records[0]["accuracy"] is None and records[1]["accuracy"] is not None
    for round_num in (2, 3):
        scores = scored[round_num]
        assert set(scores) == {"lm_eval.tiny_mc.acc", "lm_eval.tiny_mc.acc_stderr", "lm_eval.tiny_mc.samples"}
        assert 0.0 <= scores["lm_eval.tiny_mc.acc"] <= 1.0
        assert scores["lm_eval.tiny_mc.acc"] * 4 == round(scores["lm_eval.tiny_mc.acc"] * 4)  # k of 4 documents
        assert scores["lm_eval.tiny_mc.samples"] == 4  # eval.lm_eval_limit
    page = lm_eval_table(load_run(run_dir))
    assert page is not None and "round 2" in page and "round 3" in page and "tiny_mc" in page
    assert f"{scored[3]['lm_eval.tiny_mc.acc']:.4f} ± " in page


def _choice_logprobs(model: torch.nn.Module, tokenizer, question: str, choices: list[str]) -> list[float]:
    """log P(choice | question) as lm-eval defines it: the continuation " choice" after the context."""
    context = tokenizer(question, add_special_tokens=False)["input_ids"]
    scores = []
    for choice in choices:
        whole = tokenizer(f"{question} {choice}", add_special_tokens=False)["input_ids"]
        ids = torch.tensor([whole])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        scores.append(sum(float(logprobs[i - 1, whole[i]]) for i in range(len(context), len(whole))))
    return scores


def test_scores_follow_the_adapter_the_model_holds(dolly_config, tmp_path):
    """The correct choice of `best` is the one the adapted model prefers, of `worst` the one it does not:
    lm-eval must score 1 and 0. Scoring the base model without the adapter (or another model) would not,
    because the adapter flips some of those preferences."""
    task = CausalLMTask(dolly_config, num_labels=8)
    model = task.build_model()
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero: give the adapter an effect
            param.data.normal_(0.0, 1.0)
    model.eval()
    preferred = [int(np.argmax(_choice_logprobs(model, task.tokenizer, q, c))) for q, c in QUESTIONS]
    with model.disable_adapter():
        base = [int(np.argmax(_choice_logprobs(model, task.tokenizer, q, c))) for q, c in QUESTIONS]
    assert preferred != base, "the test needs an adapter that changes some preferences"
    folder = tmp_path / "tasks"
    write_task(folder, "best", preferred)
    write_task(folder, "worst", [1 - p for p in preferred])
    scorer = LMEvalScorer(with_tasks(dolly_config, folder, ["best", "worst"]))
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    scores = scorer.score(model, task)
    assert scores["lm_eval.best.acc"] == 1.0 and scores["lm_eval.worst.acc"] == 0.0, scores
    assert scores["lm_eval.best.samples"] == len(QUESTIONS)
    # lm-eval seeds the global generators; the run's own random streams must not notice
    assert torch.equal(torch.get_rng_state(), states[0]) and np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]


def test_shipped_example_task_loads(monkeypatch):
    """configs/lm_eval/fedhello_mc.yaml, from the repository root as the docs run it (its data_files path is
    relative to the working directory, lm-eval's rule)."""
    monkeypatch.chdir(REPO)
    manager, tasks = resolve_tasks(["fedhello_*"], "configs/lm_eval")  # a glob expands to the matching tasks
    assert tasks == ["fedhello_mc"]
    check_tasks_load(manager, tasks)


def test_a_local_group_of_builtin_tasks_is_not_scored_from_the_local_index(tmp_path):
    """Only the include folder is indexed when the configured names are local, unless a local group lists one
    of lm-eval's own tasks: that one is only in the full index."""
    from lm_eval.tasks import TaskManager

    folder = tmp_path / "tasks"
    write_task(folder, "tiny_mc", [0, 1, 0, 1, 0, 1])
    group = {"group": "{name}", "task": ["tiny_mc", "{member}"], "aggregate_metric_list": [{"metric": "acc"}]}
    for name, member in (("own", "tiny_mc"), ("mixed", "arc_easy")):
        text = yaml.safe_dump(group).replace("{name}", name).replace("{member}", member)
        (folder / f"{name}.yaml").write_text(text)
    index = TaskManager(include_path=str(folder), include_defaults=False).task_index
    assert {"tiny_mc", "own", "mixed"} <= set(index)
    assert _self_contained(index, ["tiny_mc", "own"]) and not _self_contained(index, ["mixed"])


def test_flatten_results_keeps_numbers_only():
    output = {
        "results": {
            "gsm8k": {"alias": "gsm8k", "exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": "N/A"},
            "arc_easy": {"acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": float("nan"), "sample_len": 4},
        },
        "n-samples": {"arc_easy": {"original": 10, "effective": 4}},
    }
    assert flatten_results(output) == {
        "lm_eval.gsm8k.exact_match/strict-match": 0.25,
        "lm_eval.arc_easy.acc": 0.5,
        "lm_eval.arc_easy.acc_stderr": 0.1,
        "lm_eval.arc_easy.samples": 4.0,
    }


def _no_lm_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now fails as if not installed


def _missing_data(folder: Path) -> None:
    (folder / "tiny_mc.jsonl").unlink()


# (id, eval settings, what else to break, field named in the error, words in the error)
BAD_SETTINGS = [
    ("unknown task", {"lm_eval_tasks": ["tiny_mc", "arc_eazy"]}, None, "'eval.lm_eval_tasks'", "close: arc_easy"),
    ("missing include folder", {"lm_eval_include_path": "/nonexistent/fedhello-tasks"}, None,
     "'eval.lm_eval_include_path'", "not a folder"),
    ("lm_eval not installed", {}, "no lm_eval", "'eval.lm_eval_tasks'", "pip install 'fedhello[llm]'"),
    ("task data missing", {}, "no data", "'eval.lm_eval_tasks'", "could not be loaded"),
]


@pytest.mark.parametrize(("case", "settings", "breakage", "field", "words"), BAD_SETTINGS,
                         ids=[c[0] for c in BAD_SETTINGS])
def test_bad_lm_eval_settings_are_one_line(case, settings, breakage, field, words, dolly_config, tmp_path,
                                           monkeypatch):
    folder = tmp_path / "tasks"
    write_task(folder, "tiny_mc", [0, 1, 0, 1, 0, 1])
    config = with_tasks(dolly_config, folder, ["tiny_mc"], **settings)
    if breakage == "no lm_eval":
        _no_lm_eval(monkeypatch)
    elif breakage == "no data":
        _missing_data(folder)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run"), "--no-progress", "--no-report"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {type(result.exception).__name__}: {result.exception}")
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("run folder: ")]
    assert result.exit_code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and field in lines[0] and words in lines[0], lines[0]
