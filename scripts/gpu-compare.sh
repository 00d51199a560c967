#!/usr/bin/env bash
# Run the default comparison grid (configs/compare/default.yaml: every method x 4 partitions) on one GPU,
# one process per partition (the cells are independent), then tabulate all of them.
#   MODEL_DIR=/path/to/all-MiniLM-L6-v2  BBC_DIR=/path/to/bbcnews/data  bash scripts/gpu-compare.sh
# MODEL_DIR / BBC_DIR are only needed where the embedded packages are not installed (an offline GPU box);
# BBC_DIR is a folder of class folders of .txt files, read exactly like the embedded corpus.
# GRID_OUT: grid folder (default runs/compare/default-gpu); GRID_SECONDS: stop starting cells after this
# long (finished cells are kept; rerunning resumes); extra arguments are passed on as --set overrides.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT=${GRID_OUT:-runs/compare/default-gpu}
args=(--out "$OUT" --no-progress --set train.device=cuda)
[ -n "${MODEL_DIR:-}" ] && args+=(--set "model.name_or_path=$MODEL_DIR")
[ -n "${BBC_DIR:-}" ] && args+=(--set data.source=folders --set "data.path=$BBC_DIR")
for override in "$@"; do args+=(--set "$override"); done
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-3} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
declare -A partitions=(
  [iid]="{iid: {kind: iid}}"
  [dirichlet-0.5]="{dirichlet-0.5: {kind: dirichlet, alpha: 0.5}}"
  [pathological-1]="{pathological-1: {kind: pathological, classes_per_client: 1}}"
  [pathological-2]="{pathological-2: {kind: pathological, classes_per_client: 2}}"
)
mkdir -p "$OUT"
started=$(date +%s)
for name in "${!partitions[@]}"; do
  timeout "${GRID_SECONDS:-3600}" "$PY" -m fedhello.cli compare configs/compare/default.yaml "${args[@]}" \
    --set "compare.partitions=${partitions[$name]}" >"$OUT/log-$name.txt" 2>&1 &
done
wait
echo "grid processes done after $(( $(date +%s) - started )) s"
"$PY" -m fedhello.cli compare configs/compare/default.yaml "${args[@]}" --report-only
