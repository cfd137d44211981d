#!/usr/bin/env bash
# bench/search.py against conduit (release, 127.0.0.11:8448, plain HTTP), the same load with
# `enable_search = false` (send rate only), and a fresh Synapse (instance "search",
# http://127.0.0.12:8008), in one sitting.
# Env: SERVER_BIN, SHARED, ROOMS (default 100), MESSAGES (default 20000),
# SYNAPSE=0 to skip it, SYNAPSE_MESSAGES (default MESSAGES).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared}"
BIN="${SERVER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/conduit}"
WORK="$(mktemp -d)"
export SYNAPSE_HOME="${SYNAPSE_HOME:-$HOME/.cache/synapse-ref}"
cleanup() {
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null || true
  "$SHARED/synapse/stop.sh" search >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
. "$ROOT/bench/lib.sh"
conduit() { # on|off
  rm -rf "$WORK/db"
  if [ "$1" = on ]; then
    start_conduit 127.0.0.11 "$WORK/db" "$WORK/conduit.log"
    python3 "$ROOT/bench/search.py" http://127.0.0.11:8448 "${ROOMS:-100}" "${MESSAGES:-20000}"
    echo "conduit: database $(du -sm "$WORK/db" | cut -f1) MiB, of which search index $(du -sm "$WORK/db/search" | cut -f1) MiB; peak RSS $(grep VmHWM /proc/$PID/status | awk '{print $2/1024}') MiB"
  else
    # The same load, only the send rate counts.
    start_conduit 127.0.0.11 "$WORK/db" "$WORK/conduit.log" CONDUIT_ENABLE_SEARCH=false
    python3 "$ROOT/bench/search.py" http://127.0.0.11:8448 "${ROOMS:-100}" "${MESSAGES:-20000}" 0
  fi
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
}
conduit on
conduit off
if [ "${SYNAPSE:-1}" = 1 ]; then
  "$SHARED/synapse/stop.sh" search >/dev/null 2>&1 || true
  rm -rf "$SYNAPSE_HOME/synapse-search"
  "$SHARED/synapse/start.sh" search 127.0.0.12 >/dev/null
  python3 "$ROOT/bench/search.py" http://127.0.0.12:8008 "${ROOMS:-100}" "${SYNAPSE_MESSAGES:-${MESSAGES:-20000}}"
fi
