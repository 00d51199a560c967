#!/usr/bin/env bash
# GPU smoke test of the paper's tasks: a few rounds of ViT CIFAR-100 (configs/paper, 5 % subset) and of a
# causal LM on Dolly, printing round times and peak GPU memory per tier. Works offline from a clean checkout:
#   VIT_MODEL=/models/vit-base-patch16-224-in21k CIFAR100_DATA=/data/cifar100 \
#   LM_MODEL=/models/gpt2 DOLLY_DATA=/data/databricks-dolly-15k.jsonl  bash scripts/gpu-smoke.sh
# Any variable left unset is replaced by random weights / synthetic data in the same schema (with a loud
# warning). SMOKE_TINY=1 runs tiny models on CPU in seconds (checks the script). See scripts/gpu_smoke.py.
# Python: .venv (made by scripts/install.sh when missing); if that cannot be installed (no package index),
# a python3 that already has torch/transformers/peft, plus any wheels placed in .whl/ (installed offline).
set -euo pipefail
cd "$(dirname "$0")/.."
ready() { "$1" -c "import torch, transformers, peft, datasets, flwr_datasets, pydantic, typer, fedhello" 2>/dev/null; }
PY=.venv/bin/python
if ! { [ -x "$PY" ] && ready "$PY"; }; then
  echo "== no usable .venv: bash scripts/install.sh"
  if ! PIP_RETRIES=${PIP_RETRIES:-1} PIP_DEFAULT_TIMEOUT=${PIP_DEFAULT_TIMEOUT:-15} bash scripts/install.sh; then
    echo "!! scripts/install.sh failed (no package index?): falling back to python3 + src/ (+ .whl/ wheels)"
    PY=python3
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    if compgen -G ".whl/*.whl" >/dev/null; then
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/fedhello-site .whl/*.whl
      export PYTHONPATH="$PYTHONPATH:/tmp/fedhello-site"
    fi
    ready "$PY" || { echo "error: python3 lacks fedhello's dependencies (carry wheels in .whl/)"; exit 1; }
  fi
fi
# never reach for the hub: local paths or random/synthetic fallbacks only
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} TOKENIZERS_PARALLELISM=false
exec "$PY" scripts/gpu_smoke.py
