#!/usr/bin/env bash
# Run fedhello on a real Flower deployment on this machine: one SuperLink and K SuperNodes, each SuperNode
# serving its own partition (--node-config "partition-id=i num-partitions=K"; node i trains the clients c
# with c % K == i). The app is this repository's [tool.flwr.app] (`flwr run .`). Everything started here
# is stopped by process group on exit, also on Ctrl-C or failure.
#
# usage: scripts/deploy-local.sh [--tls] [--auth] [--host HOST] [CONFIG] [K] [key=value ...]
#   the run folder is $RUN_DIR if set, else <output.dir>/<name>-<time> of the config (as `fedhello run`); it gets
#   the HTML report; exit status 1 when the run failed or a client was lost in every round it was sampled
#   --tls        HTTPS everywhere: a CA, a SuperLink certificate (127.0.0.1, localhost, ::1, HOST) and the
#                flwr connection's root-certificates are generated into the work folder
#   --auth       SuperNode authentication (implies --tls): one key pair per SuperNode, each public key
#                registered with `flwr supernode register` before its node starts; other nodes are refused
#   --host HOST  address the SuperLink listens on (default 127.0.0.1); plain HTTP only on loopback
#   --database FILE  the SuperLink's state (runs, SuperNode registrations) in FILE instead of in memory, so that a
#                restarted SuperLink knows its nodes (docs/flower.md, "Restarting the SuperLink")
#   e.g. scripts/deploy-local.sh configs/default.yaml 2 federation.rounds=3
#        scripts/deploy-local.sh --auth configs/default.yaml 2 federation.rounds=3
set -euo pipefail

TLS=0 AUTH=0 HOST=127.0.0.1 ARGS=() DATABASE=()
while (($#)); do
    case $1 in
        --tls) TLS=1 ;;
        --auth) TLS=1 AUTH=1 ;;
        --host) HOST=${2:?--host needs a value}; shift ;;
        --host=*) HOST=${1#--host=} ;;
        --database) DATABASE=(--database "$(realpath -m "${2:?--database needs a file}")"); shift ;;
        -h | --help) sed -n '2,/^set -e/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) ARGS+=("$1") ;;
    esac
    shift
done
set -- ${ARGS[@]+"${ARGS[@]}"}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG=$(realpath "${1:-$ROOT/configs/default.yaml}")
K=${2:-2}
shift $(( $# > 2 ? 2 : $# ))
OVERRIDES="$*"
BIN=${FEDHELLO_BIN:-$ROOT/.venv/bin}
PY="$BIN/python"
SECURITY=("$PY" -m fedhello.engines.flower.security)
# plain HTTP only on loopback: refused here, before anything starts (one line, exit 2)
((TLS)) || "${SECURITY[@]}" check "$HOST" --fix "pass --tls or --auth" || exit 2
# the run folder: $RUN_DIR, else <output.dir>/<name>-<time> of the config as `fedhello run` makes it (an absolute
# path: the ServerApp runs in another folder); a bad config or override is refused here, in one line
if [[ -z ${RUN_DIR:-} ]]; then
    RUN_DIR=$("$PY" - "$CONFIG" "$@" <<'PY'
import sys

from fedhello.config import load_config
from fedhello.errors import FedHelloError
from fedhello.rundir import new_run_dir

try:
    print(new_run_dir(load_config(sys.argv[1], sys.argv[2:])).resolve())
except FedHelloError as err:
    sys.exit(f"error: {err}")
PY
    ) || exit 2
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fedhello-deploy.XXXXXX")

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
        "$PY" -c "import socket; socket.create_connection(('$2', $1), timeout=1).close()" 2>/dev/null && return 0
        sleep 0.2
    done
    echo "nothing listens on $2:$1; see $WORK/superlink.log" >&2
    return 1
}

# TLS material (CA, SuperLink certificate, SuperNode keys) and each side's flags
TLS_DIR="$WORK/tls"
if ((TLS)); then
    "${SECURITY[@]}" generate "$TLS_DIR" --nodes $((AUTH ? K : 0)) --host "$HOST" >&2
    LINK_SECURITY=(--ssl-ca-certfile "$TLS_DIR/ca.crt" --ssl-certfile "$TLS_DIR/server.crt" \
        --ssl-keyfile "$TLS_DIR/server.key")
    ((AUTH)) && LINK_SECURITY+=(--enable-supernode-auth)
    NODE_SECURITY=(--root-certificates "$TLS_DIR/ca.crt")
    CONNECTION_SECURITY="root-certificates = \"$TLS_DIR/ca.crt\""
else
    LINK_SECURITY=(--insecure) NODE_SECURITY=(--insecure) CONNECTION_SECURITY="insecure = true"
fi
# nodes reach a bind-all SuperLink on loopback (its certificate covers 127.0.0.1 and ::1)
CONNECT_HOST=$HOST
[[ $HOST == 0.0.0.0 ]] && CONNECT_HOST=127.0.0.1
[[ $HOST == :: ]] && CONNECT_HOST=::1
LINK_PORT=$(free_port)
ADDRESS="$CONNECT_HOST:$LINK_PORT"
[[ $CONNECT_HOST == *:* ]] && ADDRESS="[$CONNECT_HOST]:$LINK_PORT"
# setsid: each process leads its own group, so cleanup also stops the apps it spawns
setsid flower-superlink "${LINK_SECURITY[@]}" ${DATABASE[@]+"${DATABASE[@]}"} --host "$HOST" --port "$LINK_PORT" \
    >"$WORK/superlink.log" 2>&1 &
PIDS+=($!)
wait_port "$LINK_PORT" "$CONNECT_HOST"
cat >"$FLWR_HOME/config.toml" <<TOML
[superlink]
default = "fedhello-local"

[superlink.fedhello-local]
address = "$ADDRESS"
$CONNECTION_SECURITY
TOML
for i in $(seq 0 $((K - 1))); do
    NODE_AUTH=()
    if ((AUTH)); then  # the SuperLink admits only registered public keys
        flwr supernode register "$TLS_DIR/node-$i.pub" fedhello-local >&2
        NODE_AUTH=(--auth-supernode-private-key "$TLS_DIR/node-$i")
    fi
    NODE_PORT=$(free_port)  # each SuperNode's runtime API needs a port of its own on this host
    # --isolation process: the launcher starts fedhello's executor beside the node (its child, exiting with it),
    # which runs every ClientApp task of this node in one process that keeps the model and data loaded, instead
    # of Flower starting a new process per message
    setsid "$PY" -m fedhello.engines.flower.supernode "${NODE_SECURITY[@]}" ${NODE_AUTH[@]+"${NODE_AUTH[@]}"} --superlink "$ADDRESS" \
        --host 127.0.0.1 --port "$NODE_PORT" --isolation process --node-config "partition-id=$i num-partitions=$K" \
        >"$WORK/supernode-$i.log" 2>&1 &
    PIDS+=($!)
    wait_port "$NODE_PORT" 127.0.0.1
done

MODE="plain HTTP"
((TLS)) && MODE="TLS"
((AUTH)) && MODE="TLS, SuperNode authentication"
echo "SuperLink $ADDRESS ($MODE), $K SuperNodes; run folder $RUN_DIR" >&2
flwr run "$ROOT" fedhello-local --stream \
    --run-config "config='$CONFIG' run-dir='$RUN_DIR' overrides='$OVERRIDES'"
if [[ -f "$RUN_DIR/summary.json" ]]; then
    cat "$RUN_DIR/summary.json"
    echo
    echo "results: $RUN_DIR" >&2
    [[ -f "$RUN_DIR/report/report.html" ]] && echo "report: $RUN_DIR/report/report.html" >&2
    # a client lost in every round it was sampled fails the run (one line; the results stay): docs/flower.md
    "$PY" - "$RUN_DIR" <<'PY' || exit 1
import sys
from pathlib import Path

from fedhello.engines.flower.serverapp import check_lost_clients
from fedhello.errors import FedHelloError

try:
    check_lost_clients(Path(sys.argv[1]))
except FedHelloError as err:
    sys.exit(f"error: {err}")
PY
else
    echo "the run ended without $RUN_DIR/summary.json; SuperLink log:" >&2
    tail -20 "$WORK/superlink.log" >&2
    exit 1
fi
