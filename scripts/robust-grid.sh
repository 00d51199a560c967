#!/usr/bin/env bash
# The hostile-client grid of docs/privacy.md: configs/compare/robust.yaml under masked FedAvg and each robust
# aggregator, with 2 and with 1 hostile client(s), 3 seeds each: one `fedhello compare` per (aggregator, hostile
# count), the two hostile counts in two parallel chains of one worker each (finished cells are kept: rerunning
# resumes), then the table (scripts/robust_table.py).
# Usage: [KIND=scaled SCALE=10 HOSTILE="1"] bash scripts/robust-grid.sh [OUT] [REFERENCE]
# (OUT: runs/compare/robust; REFERENCE: the attack-free grid folder, default runs/compare/privacy/no-dp, which
# scripts/privacy-grid.sh writes; KIND and SCALE: attack.kind and attack.scale instead of the config's sign_flip x4;
# HOSTILE: the hostile counts, one chain each, default "2 1")
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/compare/robust}
REFERENCE=${2:-runs/compare/privacy/no-dp}
ATTACK=()
[[ -n ${KIND:-} ]] && ATTACK+=(--set attack.kind="$KIND")
[[ -n ${SCALE:-} ]] && ATTACK+=(--set attack.scale="$SCALE")
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # the chains, one in-process worker each, share the cores
chain() {
  local hostile=$1 aggregator
  for aggregator in fedavg median trimmed_mean multi_krum; do
    .venv/bin/fedhello compare configs/compare/robust.yaml --no-progress --out "$OUT/$aggregator-$hostile" \
      --set aggregation.name="$aggregator" --set attack.hostile="$hostile" ${ATTACK[@]+"${ATTACK[@]}"} \
      --set compare.workers=1
  done
}
pids=()
for hostile in ${HOSTILE:-2 1}; do
  chain "$hostile" & pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
.venv/bin/python scripts/robust_table.py "$OUT" "$REFERENCE"
