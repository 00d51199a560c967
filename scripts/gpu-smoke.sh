#!/usr/bin/env bash
# GPU smoke test of the paper's tasks: a few rounds of ViT CIFAR-100 (configs/paper, 5 % subset) and of a
# causal LM on Dolly, printing round times and peak GPU memory per tier. Works offline from a clean checkout:
#   VIT_MODEL=/models/vit-base-patch16-224-in21k CIFAR100_DATA=/data/cifar100 \
#   LM_MODEL=/models/gpt2 DOLLY_DATA=/data/databricks-dolly-15k.jsonl  bash scripts/gpu-smoke.sh
# Any variable left unset is replaced by random weights / synthetic data in the same schema (with a loud
# warning). SMOKE_TINY=1 runs tiny models on CPU in seconds (checks the script). See scripts/gpu_smoke.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
if [ ! -x "$PY" ]; then
  echo "== .venv missing: bash scripts/install.sh"
  if ! bash scripts/install.sh; then
    # no package index reachable: fall back to a Python that already has the dependencies
    for candidate in python3 python; do
      if command -v "$candidate" >/dev/null 2>&1 && \
         "$candidate" -c "import torch, transformers, peft, datasets, flwr_datasets, pydantic, typer" 2>/dev/null; then
        PY=$candidate
        export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
        echo "!! install failed; using $candidate with PYTHONPATH=src"
        break
      fi
    done
    [ -x "$PY" ] || command -v "$PY" >/dev/null 2>&1 || { echo "error: no usable Python environment"; exit 1; }
  fi
fi
# never reach for the hub: local paths or random/synthetic fallbacks only
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} TOKENIZERS_PARALLELISM=false
exec "$PY" scripts/gpu_smoke.py
