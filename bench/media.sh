#!/usr/bin/env bash
# bench/media.py against conduit (release, 127.0.0.9:8448 plain HTTP, filesystem storage)
# and a fresh Synapse (instance "media", http://127.0.0.10:8008) in the same sitting.
# Both servers get a 100 MiB upload limit (Synapse's test config says 10M; patched here).
# Env: SERVER_BIN, SHARED, SIZES (default "1 50"), SYNAPSE=0 to skip it.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared}"
BIN="${SERVER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/conduit}"
WORK="$(mktemp -d)"
export SYNAPSE_HOME="${SYNAPSE_HOME:-$HOME/.cache/synapse-ref}"
cleanup() {
  [ -n "${PID:-}" ] && kill "$PID" 2>/dev/null || true
  "$SHARED/synapse/stop.sh" media >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
. "$ROOT/bench/lib.sh"
start_conduit 127.0.0.9 "$WORK/db" "$WORK/conduit.log" CONDUIT_MAX_REQUEST_SIZE=104857600
python3 "$ROOT/bench/media.py" http://127.0.0.9:8448 "$PID" ${SIZES:-1 50}
echo "conduit media on disk: $(du -sm "$WORK/db/media" | cut -f1) MiB"
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
if [ "${SYNAPSE:-1}" = 1 ]; then
  "$SHARED/synapse/stop.sh" media >/dev/null 2>&1 || true
  rm -rf "$SYNAPSE_HOME/synapse-media"
  PY="$SYNAPSE_HOME/venv/bin/python"
  [ -x "$PY" ] || "$SHARED/synapse/install.sh"
  "$PY" "$SHARED/synapse/make_config.py" media 127.0.0.10 >/dev/null
  sed -i 's/^max_upload_size:.*/max_upload_size: 100M/' "$SYNAPSE_HOME/synapse-media/homeserver.yaml"
  grep -q '^max_upload_size: 100M' "$SYNAPSE_HOME/synapse-media/homeserver.yaml"
  "$PY" -m synapse.app.homeserver --config-path "$SYNAPSE_HOME/synapse-media/homeserver.yaml" --daemonize
  for _ in $(seq 1 120); do curl -fs http://127.0.0.10:8008/_matrix/client/versions >/dev/null && break; sleep 0.5; done
  python3 "$ROOT/bench/media.py" http://127.0.0.10:8008 "$(cat "$SYNAPSE_HOME/synapse-media/homeserver.pid")" ${SIZES:-1 50}
fi
