"""The configuration reference is generated from the config models: every field is described, `fedhello config`
lists them, and docs/config.md is exactly what the code generates (issue 23, item 1)."""

from pathlib import Path

from typer.testing import CliRunner

from fedhello.cli import app
from fedhello.cli.reference import format_markdown, reference_rows
from fedhello.config import config_fields, config_sections

runner = CliRunner()


def test_every_field_of_every_section_has_a_description():
    undescribed = [name for name, info in config_fields() if not (info.description or "").strip()]
    assert not undescribed, f"give these fields a Field(description=...): {undescribed}"
    sections = config_sections()
    assert {"model", "lora", "data", "train", "tiers", "flower", "eval"} <= set(sections)
    assert all(doc for _, doc in sections.values()), "every section model needs a docstring"


def test_docs_config_md_is_what_the_code_generates():
    committed = Path("docs/config.md").read_text()
    assert committed == format_markdown(reference_rows()) + "\n", (
        "docs/config.md is stale: regenerate it with `fedhello config --markdown > docs/config.md`"
    )
    # the fields a new user looks for, and no reference left by hand elsewhere
    for field in ("data.text_column", "data.label_column", "data.encoding", "data.csv_delimiter", "tiers[].share"):
        assert f"| `{field}` |" in committed, field
    flower = Path("docs/flower.md").read_text()
    assert "| `flower.supernodes` |" not in flower and "config.md" in flower


def test_config_command_lists_fields_with_type_default_and_description():
    everything = runner.invoke(app, ["config"])
    assert everything.exit_code == 0, everything.output
    lines = everything.output.splitlines()
    assert "train.lr  (float, > 0; default 0.0005)" in lines
    assert any(line.startswith("data.csv_delimiter  (str, length >= 1; default ','") for line in lines)
    assert len([line for line in lines if not line.startswith(" ")]) == len(reference_rows())

    train = runner.invoke(app, ["config", "train"])
    names = [line.split()[0] for line in train.output.splitlines() if not line.startswith(" ")]
    assert train.exit_code == 0 and names and all(name.startswith("train.") for name in names)

    one = runner.invoke(app, ["config", "data.encoding"])
    assert one.output.startswith("data.encoding  (str; default utf-8)\n    text encoding")

    typo = runner.invoke(app, ["config", "trian"])
    assert typo.exit_code == 2 and "did you mean 'train'?" in typo.stderr and "Traceback" not in typo.output
