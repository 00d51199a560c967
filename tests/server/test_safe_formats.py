"""Only safe formats cross process boundaries: no module of the package may unpickle anything."""

from __future__ import annotations

import re
from pathlib import Path

import fedhello

UNSAFE = re.compile(r"\bimport pickle\b|\bpickle\.loads?\(|\btorch\.load\(|allow_pickle\s*=\s*True|\bjoblib\.load\(")


def test_no_module_deserialises_with_pickle():
    root = Path(fedhello.__file__).parent
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for path in sorted(root.rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if UNSAFE.search(line)
    ]
    assert not offenders, f"pickle-based loading found: {offenders}"
