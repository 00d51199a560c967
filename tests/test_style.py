"""ruff is part of the suite, so a style regression fails CI like any other bug."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(), reason="ruff not installed"
)
def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    paths = [p for p in ("src", "tests", "benchmarks", "scripts") if Path(p).is_dir()]
    proc = subprocess.run([ruff, "check", *paths], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
