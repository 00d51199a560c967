"""The report opens in a real browser: headless Chromium loads it offline, decodes every image, logs no errors.

`bash scripts/install.sh --dev` installs Chromium (Debian's `chromium` package, as root or with password-less
sudo). Without it the test skips on a developer's machine, but fails where the environment variable `CI` is
set: CI must not go green without having opened the report."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile

import pytest
from matplotlib.image import imread

from fedhello.reporting import write_report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--virtual-time-budget=5000",  # lets the page's load handler run before the DOM is dumped
]


def chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180
        )


def in_ci() -> bool:
    """Whether the environment says this is CI (`CI` set to anything but empty, 0 or false)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def require_chromium() -> None:
    """Without Chromium: a skip on a developer's machine, a failure in CI."""
    if CHROMIUM is None:
        why = "chromium not installed (fix: bash scripts/install.sh --dev as root, or apt-get install chromium)"
        if in_ci():
            pytest.fail(f"CI is set and {why}")
        pytest.skip(why)


def test_report_opens_in_headless_chromium(make_run_dir, tmp_path):
    require_chromium()
    report = write_report([make_run_dir("fim", peak_mem=True)])
    pngs = len(list(report.parent.glob("*.png")))
    # opened from a folder of its own: the page must not need the PNGs beside it
    alone = tmp_path / "alone" / "report.html"
    alone.parent.mkdir()
    shutil.copy(report, alone)

    dom = chromium("--dump-dom", alone.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout).group(0)
    assert f'data-images="{pngs}"' in body and 'data-broken-images="0"' in body, body
    assert ":CONSOLE" not in dom.stderr, [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]

    shot = tmp_path / "shot.png"
    result = chromium(f"--screenshot={shot}", "--window-size=1280,2000", alone.as_uri())
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1280) and float(pixels[..., :3].std()) > 0.05


def test_a_missing_browser_fails_in_ci(monkeypatch):
    """The CI rule itself, whatever this machine has installed: no Chromium is a failure where CI is set, a
    skip elsewhere."""
    monkeypatch.setitem(globals(), "CHROMIUM", None)
    outcomes = (pytest.fail.Exception, pytest.skip.Exception)  # a skip must not escape: it would hide the check
    monkeypatch.setenv("CI", "true")
    with pytest.raises(outcomes) as raised:
        require_chromium()
    assert raised.type is pytest.fail.Exception and "CI is set and chromium not installed" in str(raised.value)
    for value in ("", "0", "false"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(outcomes) as raised:
            require_chromium()
        assert raised.type is pytest.skip.Exception, value
