"""The configuration reference, generated from the config models: `fedhello config [SECTION]` prints it and
`fedhello config --markdown` writes docs/config.md (a test checks the committed page equals it). Every field's
type, constraint, default and description come from `fedhello.config`, so the reference cannot drift."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Any, Literal

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from fedhello.config import config_fields, config_sections, nearest_key
from fedhello.errors import FedHelloError

TOP_LEVEL = "run"  # the heading of the fields outside any section (name, seed, task)


@dataclass(frozen=True)
class FieldRow:
    """One field of the reference."""

    name: str  # dotted, e.g. train.lr or tiers[].share
    type: str  # e.g. "float > 0", "one of: fixed, per_rank", "int | null"
    default: str  # as YAML writes it; "required" when there is none
    description: str

    @property
    def section(self) -> str:
        if "." in self.name:
            return self.name.split(".", 1)[0].removesuffix("[]")
        return self.name if self.type == "list of mappings" else TOP_LEVEL


def _is_model(annotation: Any) -> bool:  # noqa: ANN401 - a type annotation
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _type_name(annotation: Any) -> str:  # noqa: ANN401 - a type annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (UnionType, typing.Union):
        names = [_type_name(a) for a in args if a is not NoneType]
        return " | ".join(names) + (" | null" if NoneType in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}s" if args and _is_model(args[0]) else f"list of {_type_name(args[0])}"
    if _is_model(annotation):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _constraints(info: FieldInfo) -> list[str]:
    out = []
    for meta in info.metadata:
        for attribute, sign in _BOUNDS.items():
            if isinstance(getattr(meta, attribute, None), int | float):
                out.append(f"{sign} {getattr(meta, attribute):g}")
        if isinstance(meta, annotated_types.MinLen):
            out.append(f"length >= {meta.min_length}")
        if isinstance(meta, annotated_types.MaxLen):
            out.append(f"length <= {meta.max_length}")
    return out


def _yaml(value: Any) -> str:  # noqa: ANN401 - any default
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", exclude_defaults=True)
    elif isinstance(value, list):
        value = [v.model_dump(mode="json", exclude_defaults=True) if hasattr(v, "model_dump") else v for v in value]
    if isinstance(value, float):
        return f"{value:.4g}"
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    text = text.removesuffix("\n...").removesuffix("...").strip()
    return text.replace("0.3333333333333333", "1/3")  # the default tiers' shares, as a config writes them


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    return _yaml(value)


def reference_rows() -> list[FieldRow]:
    """Every field of the run config, in declaration order."""
    rows = []
    for name, info in config_fields():
        kind = ", ".join([_type_name(info.annotation), *_constraints(info)])
        rows.append(FieldRow(name, kind, _default(info), " ".join((info.description or "").split())))
    return rows


def select(rows: list[FieldRow], wanted: str | None) -> list[FieldRow]:
    """The rows of a section (`train`), of one field (`train.lr`) or all (`wanted` None); an unknown name is
    refused with the nearest one."""
    if not wanted:
        return rows
    key = wanted.strip().removesuffix(".")
    chosen = [r for r in rows if r.section == key or r.name == key or r.name.replace("[]", "") == key]
    if not chosen:
        near = nearest_key(tuple(key.split(".")))
        hint = f"did you mean '{near}'? " if near else ""
        names = ", ".join([TOP_LEVEL, *config_sections()])
        raise FedHelloError(f"argument 'SECTION': '{wanted}' is no section or field (fix: {hint}sections: {names})")
    return chosen


def format_text(rows: list[FieldRow]) -> str:
    """The terminal reference: one block per field (name, type, default; then its description)."""
    lines = []
    for row in rows:
        lines.append(f"{row.name}  ({row.type}; default {row.default})")
        lines.append(f"    {row.description}")
    return "\n".join(lines)


def _cell(text: str) -> str:
    # a table cell: '|' would end it, '<name>' would be read as an HTML tag
    return text.replace("|", "\\|").replace("<", "&lt;")


def format_markdown(rows: list[FieldRow]) -> str:
    """docs/config.md: a table per section, each under its description."""
    sections = config_sections()
    out = [
        "# Configuration reference",
        "",
        "<!-- generated by `fedhello config --markdown > docs/config.md`; do not edit by hand "
        "(tests/cli/test_reference.py checks it) -->",
        "",
        "Every field of a run config (`fedhello run CONFIG`), with its type, default and meaning. A config is YAML "
        "with one mapping per section; any field can be overridden on the command line with its dotted name, "
        "`--set train.lr=0.001` (lists in YAML: `--set 'lora.target_modules=[query, value]'`, an item of "
        "`tiers`: `--set tiers.0.layers=2`). A config may start with `base: other.yaml` and change only what "
        "differs. `fedhello config` prints the same reference in the terminal, `fedhello config train` one "
        "section.",
        "",
    ]
    groups: dict[str, list[FieldRow]] = {}
    for row in rows:
        groups.setdefault(row.section, []).append(row)
    for section, members in groups.items():
        title = "Top-level fields" if section == TOP_LEVEL else f"`{section}`"
        out += [f"## {title}", ""]
        if section in sections:
            out += [" ".join(sections[section][1].split()), ""]
        out += ["| field | type | default | description |", "|---|---|---|---|"]
        for row in members:
            default = row.default if row.default == "required" else f"`{_cell(row.default)}`"
            out.append(f"| `{row.name}` | {_cell(row.type)} | {default} | {_cell(row.description)} |")
        out.append("")
    return "\n".join(out)
