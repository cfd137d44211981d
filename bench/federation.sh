#!/usr/bin/env bash
# Federation benchmarks: conduit and Synapse on loopback, measured by bench/federation.py.
#   conduit A: server name 127.0.0.5:8448   conduit B: 127.0.0.6:8448
#   synapse:   server name 127.0.0.4:8448, client API http://127.0.0.4:8008 (instance "fb",
#              apart from the interop test's "b" on 127.0.0.2)
# Env: MEMBERS (default "1000"; JOINS=0 skips the joins), MESSAGES (default 2000), SERVER_BIN (default: release
# build in $CARGO_TARGET_DIR or target/), SHARED (../shared).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared}"
BIN="${SERVER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/conduit}"
MEMBERS="${MEMBERS:-1000}"
MESSAGES="${MESSAGES:-2000}"
WORK="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$SHARED/synapse/stop.sh" fb >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_conduit() { # ip name
  local ip=$1 name=$2
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/$name.key" -out "$WORK/$name.crt" \
    -days 30 -subj "/CN=$ip" -addext "subjectAltName=IP:$ip" >/dev/null 2>&1
  CONDUIT_SERVER_NAME="$ip:8448" CONDUIT_ADDRESS="$ip" CONDUIT_PORT=8448 \
  CONDUIT_DATABASE_PATH="$WORK/$name-db" CONDUIT_ALLOW_REGISTRATION=true \
  CONDUIT_RATE_LIMITS='{enabled=false}' CONDUIT_LOG=warn \
  CONDUIT_TLS="{certs=\"$WORK/$name.crt\",key=\"$WORK/$name.key\",dual_protocol=true}" \
  CONDUIT_ALLOW_INVALID_TLS_CERTIFICATES=true \
    "$BIN" >"$WORK/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -fs "http://$ip:8448/_matrix/client/versions" >/dev/null && return; sleep 0.1; done
  echo "conduit $name did not start:" >&2; tail -5 "$WORK/$name.log" >&2; exit 1
}

export SYNAPSE_HOME="${SYNAPSE_HOME:-$HOME/.cache/synapse-ref}"
"$SHARED/synapse/stop.sh" fb >/dev/null 2>&1 || true
rm -rf "$SYNAPSE_HOME/synapse-fb"
"$SHARED/synapse/start.sh" fb 127.0.0.4 >/dev/null
start_conduit 127.0.0.5 a
start_conduit 127.0.0.6 b
A=http://127.0.0.5:8448 B=http://127.0.0.6:8448 S=http://127.0.0.4:8008
PY="python3 $ROOT/bench/federation.py"
for n in ${MEMBERS}; do
  [ "${JOINS:-1}" = 1 ] || break
  $PY join "$S" "$A" "$n"     # conduit joins a room on Synapse
  $PY join "$A" "$S" "$n"     # Synapse joins a room on conduit
  $PY join "$A" "$B" "$n"     # conduit joins a room on another conduit
done
$PY send "$A" "$B" "$MESSAGES"  # conduit B accepting a conduit peer's transactions
$PY send "$A" "$S" "$MESSAGES"  # Synapse accepting the same
