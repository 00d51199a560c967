"""End to end: the in-process engine on a tiny random BERT learns and writes a complete run folder."""

import csv
import json

from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from fedhello.engines import ENGINES
from fedhello.plan import state_bytes
from fedhello.server import Coordinator, build_federation


def test_tiny_run_learns_and_writes_outputs(tiny_config, tmp_path):
    config = tiny_config.model_copy(deep=True)
    config.federation.rounds = 6
    config.train.local_epochs = 2
    run_dir = tmp_path / "run"
    summary = ENGINES.get("local")().run(config, run_dir, show_progress=False)

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == list(range(1, 7))
    assert records[-1]["accuracy"] >= 0.6, "4 keyword classes: chance is 0.25"
    accuracies = [r["accuracy"] for r in records]
    assert summary["final_accuracy"] == accuracies[-1] and summary["best_accuracy"] == max(accuracies)
    assert accuracies[summary["best_round"] - 1] == max(accuracies)
    download = state_bytes(Coordinator(build_federation(config)).global_state)  # the adapter sent to each client
    for record in records:
        assert len(record["clients"]) == 3
        assert record["bytes_up"] == sum(c["bytes_up"] for c in record["clients"])
        assert record["bytes_down"] == 3 * download
        for client in record["clients"]:
            budget = config.tiers[client["tier"]].layers
            assert len(client["layers"]) == budget
    # FIM refreshed every round after a 1-round warm-up
    assert [r["importance_refresh"] for r in records] == [False] + [True] * 5
    importance = [json.loads(line) for line in (run_dir / "importance.jsonl").read_text().splitlines()]
    assert len(importance) == 5 and len(importance[0]["probabilities"]) == 4

    with (run_dir / "allocations.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * 3
    assert (run_dir / "config.yaml").exists() and (run_dir / "accuracy.png").stat().st_size > 1000
    assert json.loads((run_dir / "summary.json").read_text())["rounds"] == 6

    # the saved adapter (LoRA + federated head) loads with peft and reproduces the final accuracy
    base = AutoModelForSequenceClassification.from_pretrained(config.model.name_or_path, num_labels=4)
    loaded = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    federation = build_federation(config)
    assert federation.task.evaluate(loaded, federation.test)["accuracy"] == records[-1]["accuracy"]


def test_same_seed_same_result(tiny_config, tmp_path):
    config = tiny_config.model_copy(deep=True)
    config.federation.rounds = 2
    config.output.save_adapter = False
    config.output.plot = False
    first = ENGINES.get("local")().run(config, tmp_path / "a", show_progress=False)
    second = ENGINES.get("local")().run(config, tmp_path / "b", show_progress=False)
    assert first["final_accuracy"] == second["final_accuracy"]
    assert (tmp_path / "a" / "allocations.csv").read_text() == (tmp_path / "b" / "allocations.csv").read_text()
