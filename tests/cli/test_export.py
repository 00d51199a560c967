"""`fedhello export RUN_DIR OUT_DIR`: an adapter folder peft's Auto classes load from any working directory,
with the run's class names in its config, predicting what the run's global adapter predicts (issue 23, item 7)."""

import json
import os

import torch
from peft import AutoPeftModelForSequenceClassification, PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from typer.testing import CliRunner

from fedhello.cli import app
from fedhello.engines import ENGINES

TEXTS = ["match goal team score", "bank market price stock", "song band album concert", "computer chip data code"]


def test_exported_adapter_loads_with_auto_peft_from_another_folder(tiny_config, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run names its model by a relative path, as a user's config does
    config = tiny_config.model_copy(deep=True)
    config.model.name_or_path = os.path.relpath(tiny_model_dir, tmp_path)
    config.federation.rounds, config.output.plot = 1, False
    run_dir = tmp_path / "run"
    ENGINES.get("local")().run(config, run_dir, show_progress=False)

    result = CliRunner().invoke(app, ["export", "run", "export"])
    assert result.exit_code == 0, result.output
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # nothing may resolve against the folder the run or the export ran in

    exported = AutoPeftModelForSequenceClassification.from_pretrained(str(tmp_path / "export")).eval()
    labels = ["money", "music", "sport", "tech"]
    assert exported.config.num_labels == 4
    assert exported.config.id2label == dict(enumerate(labels))
    assert exported.config.label2id == {name: i for i, name in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "export"))  # the tokenizer travels with it
    adapter_config = json.loads((tmp_path / "export" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str((tmp_path / "export").resolve())

    # the run's own global adapter, loaded the documented way beside the base it trained on
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=4)
    original = PeftModel.from_pretrained(base, str(run_dir / "adapter")).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        want, got = original(**batch).logits, exported(**batch).logits
    assert torch.allclose(want, got, atol=1e-6), (want, got)
    assert want.argmax(-1).tolist() == got.argmax(-1).tolist()


def test_export_refuses_what_it_cannot_export(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(tmp_path / "nothing"), str(tmp_path / "out")])
    assert result.exit_code == 2 and "is not a run folder" in result.stderr and "Traceback" not in result.output
