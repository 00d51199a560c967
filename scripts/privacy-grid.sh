#!/usr/bin/env bash
# The privacy-cost grid of docs/privacy.md: configs/compare/privacy.yaml at eps 1, 4, 16, 64 and without DP (3 seeds
# each, FedIT), one `fedhello compare` per budget (finished cells are kept: rerunning resumes), then fill-rc (the
# recommended budget-true method) at eps 16 on seed 1, clipping without noise, then the table and plot
# (scripts/privacy_table.py).
# Usage: bash scripts/privacy-grid.sh [OUT]     (OUT defaults to runs/compare/privacy)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/compare/privacy}
FEDHELLO=.venv/bin/fedhello
# budget -> the smallest noise multiplier whose 12 rounds stay within it (fedhello.accounting.noise_for)
for pair in 1:28.1 4:8.02 16:2.52 64:0.908; do
  eps=${pair%%:*}; z=${pair##*:}
  $FEDHELLO compare configs/compare/privacy.yaml --no-progress --out "$OUT/eps-$eps" \
    --set privacy.noise_multiplier="$z" --set privacy.max_epsilon="$eps"
done
$FEDHELLO compare configs/compare/privacy.yaml --no-progress --out "$OUT/no-dp" \
  --set privacy.mode=off --set privacy.max_epsilon=null
$FEDHELLO compare configs/compare/privacy.yaml --no-progress --out "$OUT/eps-16" \
  --set "compare.methods=[fedit, fill-rc]" --set "compare.seeds=[1]"
$FEDHELLO compare configs/compare/privacy.yaml --no-progress --out "$OUT/clip-only" \
  --set privacy.noise_multiplier=0 --set privacy.max_epsilon=null
.venv/bin/python scripts/privacy_table.py "$OUT"
