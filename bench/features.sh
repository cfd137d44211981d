#!/usr/bin/env bash
# bench/features.py against conduit (release, 127.0.0.8:8448 plain HTTP) and a fresh Synapse
# (instance "feat", client API http://127.0.0.7:8008) in the same sitting.
# Env: SERVER_BIN, SHARED, MEMBERS (push, default 1000), MESSAGES (default 1000),
# DEVICES (claim, default 1000), FANOUT (to-device, default 500), SYNAPSE=0 to skip it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared}"
BIN="${SERVER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/conduit}"
WORK="$(mktemp -d)"
cleanup() {
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null || true
  "$SHARED/synapse/stop.sh" feat >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
CONDUIT_SERVER_NAME=127.0.0.8:8448 CONDUIT_ADDRESS=127.0.0.8 CONDUIT_PORT=8448 \
CONDUIT_DATABASE_PATH="$WORK/db" CONDUIT_ALLOW_REGISTRATION=true \
CONDUIT_RATE_LIMITS='{enabled=false}' CONDUIT_LOG=warn "$BIN" >"$WORK/conduit.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -fs http://127.0.0.8:8448/_matrix/client/versions >/dev/null && break; sleep 0.1; done
PY="python3 $ROOT/bench/features.py"
run() { # base
  $PY push "$1" "${MEMBERS:-1000}" "${MESSAGES:-1000}"
  $PY claim "$1" "${DEVICES:-1000}"
  $PY todevice "$1" "${FANOUT:-500}"
}
run http://127.0.0.8:8448
kill "$PID"; PID=
if [ "${SYNAPSE:-1}" = 1 ]; then
  export SYNAPSE_HOME="${SYNAPSE_HOME:-$HOME/.cache/synapse-ref}"
  "$SHARED/synapse/stop.sh" feat >/dev/null 2>&1 || true
  rm -rf "$SYNAPSE_HOME/synapse-feat"
  "$SHARED/synapse/start.sh" feat 127.0.0.7 >/dev/null
  run http://127.0.0.7:8008
fi
