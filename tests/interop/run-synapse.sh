#!/usr/bin/env bash
# Federation interop with a real Synapse on loopback (../shared/synapse installs it from PyPI).
#   conduit: server name 127.0.0.1:8448 (TLS, self-signed; plain HTTP on the same port for the
#            test client through dual_protocol), database in a temporary directory
#   synapse: server name 127.0.0.2:8448, client API http://127.0.0.2:8008
# Then tests/interop/synapse.py drives users on both sides through the client APIs.
# Usage: tests/interop/run-synapse.sh   (env: SERVER_BIN to use a built binary, SHARED to
#        point at the shared folder, KEEP=1 to leave both servers running)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SHARED="${SHARED:-$ROOT/../shared}"
WORK="$(mktemp -d)"
BIN="${SERVER_BIN:-}"
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --locked --quiet)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/conduit"
fi

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/tls.key" -out "$WORK/tls.crt" \
  -days 30 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" >/dev/null 2>&1

cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    [ -n "${CONDUIT_PID:-}" ] && kill "$CONDUIT_PID" 2>/dev/null || true
    "$SHARED/synapse/stop.sh" b >/dev/null 2>&1 || true
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

# A fresh Synapse each run: its database remembers rooms and our old signing keys.
export SYNAPSE_HOME="${SYNAPSE_HOME:-$HOME/.cache/synapse-ref}"
"$SHARED/synapse/stop.sh" b >/dev/null 2>&1 || true
rm -rf "$SYNAPSE_HOME/synapse-b"
"$SHARED/synapse/start.sh" b 127.0.0.2

CONDUIT_SERVER_NAME="127.0.0.1:8448" \
CONDUIT_ADDRESS=127.0.0.1 CONDUIT_PORT=8448 \
CONDUIT_DATABASE_PATH="$WORK/db" \
CONDUIT_ALLOW_REGISTRATION=true \
CONDUIT_RATE_LIMITS='{enabled=false}' \
CONDUIT_TLS="{certs=\"$WORK/tls.crt\",key=\"$WORK/tls.key\",dual_protocol=true}" \
CONDUIT_ALLOW_INVALID_TLS_CERTIFICATES=true \
CONDUIT_LOG="${CONDUIT_LOG:-info,conduit=debug}" \
  "$BIN" >"$WORK/conduit.log" 2>&1 &
CONDUIT_PID=$!
for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:8448/_matrix/client/versions >/dev/null && break
  sleep 0.1
done

status=0
python3 "$ROOT/tests/interop/synapse.py" http://127.0.0.1:8448 http://127.0.0.2:8008 || status=$?
if [ "$status" != 0 ]; then
  echo "--- conduit log (tail)"; tail -n 60 "$WORK/conduit.log"
  echo "--- synapse log (errors)"; grep -E "WARNING|ERROR" "$SYNAPSE_HOME/synapse-b/homeserver.log" | tail -n 40
fi
exit "$status"
