#!/usr/bin/env bash
# One GPU, one prepared run (about 10 minutes): the converged bench with every method at 10 seeds
# (configs/compare/bench-gpu.yaml), then the LLM preset's per-tier memory measured against its offline
# prediction (configs/paper/llama-1b-qlora.yaml with random weights drawn from the model's config: nothing is
# downloaded; nf4, int8 and bf16). Everything it prints and writes lands in $OUT (default runs/gpu-bench):
#   bash scripts/gpu-bench.sh                      # GRID_SECONDS (default 480) caps the grid; rerun resumes it
# Afterwards `fedhello compare configs/compare/bench-gpu.yaml --out $OUT/grid --report-only` re-tabulates.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${OUT:-runs/gpu-bench}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 FEDHELLO_CACHE="$OUT/cache"
{
  echo "== $(date -u '+%F %T') UTC on $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"
  echo "== grid: timeout ${GRID_SECONDS:-480} $PY -m fedhello.cli compare configs/compare/bench-gpu.yaml --out $OUT/grid"
  started=$(date +%s)
  timeout "${GRID_SECONDS:-480}" "$PY" -m fedhello.cli compare configs/compare/bench-gpu.yaml --out "$OUT/grid" \
    --no-progress
  echo "== grid exit $? after $(( $(date +%s) - started )) s"
  "$PY" -m fedhello.cli compare configs/compare/bench-gpu.yaml --out "$OUT/grid" --report-only --no-progress
  for q in nf4 int8 none; do
    echo "== LLM preset, base weights $q (bf16 autocast): benchmarks/estimate_vs_measured.py"
    started=$(date +%s)
    timeout 150 "$PY" benchmarks/estimate_vs_measured.py --config configs/paper/llama-1b-qlora.yaml \
      --set train.device=cuda --set train.precision=bf16 --quantizations "$q"
    echo "== exit $? after $(( $(date +%s) - started )) s"
  done
} 2>&1 | tee "$OUT/gpu-bench.log"
