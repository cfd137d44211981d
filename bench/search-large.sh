#!/usr/bin/env bash
# bench/search.py against conduit alone with a large corpus (default 1,000,000 messages in
# 1,000 rooms, measured at 100k, 250k and 500k on the way), then `conduit search rebuild`
# of the whole index, timed. Env: SERVER_BIN, ROOMS, MESSAGES, CHECKPOINTS, WORK (kept).
# SEARCH=off: the same sends with `enable_search = false` (send rate only, no rebuild).
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${SERVER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/conduit}"
W="${WORK:-$(mktemp -d)}"; rm -rf "$W/db"; mkdir -p "$W"
export CONDUIT_SERVER_NAME=127.0.0.11:8448 CONDUIT_ADDRESS=127.0.0.11 CONDUIT_PORT=8448 \
  CONDUIT_DATABASE_PATH="$W/db" CONDUIT_ALLOW_REGISTRATION=true \
  CONDUIT_RATE_LIMITS='{enabled=false}' CONDUIT_LOG=warn
QUERIES=100
if [ "${SEARCH:-on}" = off ]; then export CONDUIT_ENABLE_SEARCH=false; QUERIES=0; fi
"$BIN" > "$W/log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -fs http://127.0.0.11:8448/_matrix/client/versions >/dev/null && break; sleep 0.1; done
CHECKPOINTS="${CHECKPOINTS:-100000 250000 500000}" python3 "$ROOT/bench/search.py" \
  http://127.0.0.11:8448 "${ROOMS:-1000}" "${MESSAGES:-1000000}" $QUERIES
echo "database $(du -sm "$W/db" | cut -f1) MiB, search index $(du -sm "$W/db/search" | cut -f1) MiB, peak RSS $(grep VmHWM /proc/$PID/status | awk '{print $2/1024}') MiB"
kill $PID; wait $PID
[ $QUERIES = 0 ] && exit 0
/usr/bin/time -f "rebuild: %e s wall, %M KiB max RSS" "$BIN" search rebuild
echo "index after rebuild $(du -sm "$W/db/search" | cut -f1) MiB"
