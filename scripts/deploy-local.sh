#!/usr/bin/env bash
# Run fedhello on a real Flower deployment on this machine: one SuperLink and K SuperNodes on
# 127.0.0.1 (insecure mode: loopback only; see docs/flower.md for TLS), each SuperNode serving its own
# partition (--node-config "partition-id=i num-partitions=K"; node i trains the clients c with
# c % K == i). The app is this repository's [tool.flwr.app] (`flwr run .`). Everything started here
# is stopped by process group on exit, also on Ctrl-C or failure.
#
# usage: scripts/deploy-local.sh [CONFIG] [K] [key=value ...]
#   e.g. scripts/deploy-local.sh configs/default.yaml 2 federation.rounds=3
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG=$(realpath "${1:-$ROOT/configs/default.yaml}")
K=${2:-2}
shift $(( $# > 2 ? 2 : $# ))
OVERRIDES="$*"
BIN=${FEDHELLO_BIN:-$ROOT/.venv/bin}
PY="$BIN/python"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fedhello-deploy.XXXXXX")
RUN_DIR=${RUN_DIR:-$ROOT/runs/deploy-$(date +%Y%m%d-%H%M%S)}

# private Flower home, no telemetry, and never a per-run re-install of torch & co. (docs/flower.md)
export FLWR_HOME="$WORK/flwr-home" FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
export PATH="$BIN:$PATH" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
mkdir -p "$FLWR_HOME"

PIDS=()
descendants() { local child; for child in $(pgrep -P "$1" 2>/dev/null); do echo "$child"; descendants "$child"; done; }
cleanup() {
    # Flower starts some helpers (the SuperLink's flower-superexec) in sessions of their own: kill them by pid
    local family
    family=$(for pid in "${PIDS[@]}"; do descendants "$pid"; done)
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    sleep 1
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    for pid in $family; do kill -KILL "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "logs were in $WORK (removed); stopped: ${PIDS[*]:-nothing}" >&2
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 300); do
        "$PY" -c "import socket, sys; sys.exit(socket.socket().connect_ex(('127.0.0.1', $1)))" && return 0
        sleep 0.2
    done
    echo "nothing listens on 127.0.0.1:$1; see $WORK/superlink.log" >&2
    return 1
}

LINK_PORT=$(free_port)
# setsid: each process leads its own group, so cleanup also stops the apps it spawns
setsid flower-superlink --insecure --host 127.0.0.1 --port "$LINK_PORT" >"$WORK/superlink.log" 2>&1 &
PIDS+=($!)
wait_port "$LINK_PORT"
for i in $(seq 0 $((K - 1))); do
    setsid flower-supernode --insecure --superlink "127.0.0.1:$LINK_PORT" --host 127.0.0.1 --port "$(free_port)" \
        --node-config "partition-id=$i num-partitions=$K" >"$WORK/supernode-$i.log" 2>&1 &
    PIDS+=($!)
done
cat >"$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "fedhello-local"

[superlink.fedhello-local]
address = "127.0.0.1:$LINK_PORT"
insecure = true
TOML

echo "SuperLink 127.0.0.1:$LINK_PORT, $K SuperNodes; run folder $RUN_DIR" >&2
flwr run "$ROOT" fedhello-local --stream \
    --run-config "config='$CONFIG' run-dir='$RUN_DIR' overrides='$OVERRIDES'"
if [[ -f "$RUN_DIR/summary.json" ]]; then
    cat "$RUN_DIR/summary.json"
    echo
    echo "results: $RUN_DIR" >&2
else
    echo "the run ended without $RUN_DIR/summary.json; SuperLink log:" >&2
    tail -20 "$WORK/superlink.log" >&2
    exit 1
fi
