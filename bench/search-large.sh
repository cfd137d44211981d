#!/usr/bin/env bash
# bench/search.py against conduit alone with a large corpus (default 1,000,000 messages in
# 1,000 rooms, measured at 100k, 250k and 500k on the way), then `conduit search rebuild`
# of the whole index, timed. Env: SERVER_BIN, ROOMS, MESSAGES, CHECKPOINTS, WORK (kept).
# SEARCH=off: the same sends with `enable_search = false` (send rate only, no rebuild).
set -u
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${SERVER_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/conduit}"
W="${WORK:-$(mktemp -d)}"; rm -rf "$W/db"; mkdir -p "$W"
. "$ROOT/bench/lib.sh"
QUERIES=100 OFF=()
if [ "${SEARCH:-on}" = off ]; then QUERIES=0 OFF=(CONDUIT_ENABLE_SEARCH=false); fi
start_conduit 127.0.0.11 "$W/db" "$W/log" "${OFF[@]}"
CHECKPOINTS="${CHECKPOINTS:-100000 250000 500000}" python3 "$ROOT/bench/search.py" \
  http://127.0.0.11:8448 "${ROOMS:-1000}" "${MESSAGES:-1000000}" $QUERIES
echo "database $(du -sm "$W/db" | cut -f1) MiB, search index $(du -sm "$W/db/search" | cut -f1) MiB, peak RSS $(grep VmHWM /proc/$PID/status | awk '{print $2/1024}') MiB"
kill $PID; wait $PID
[ $QUERIES = 0 ] && exit 0
CONDUIT_SERVER_NAME=127.0.0.11:8448 CONDUIT_DATABASE_PATH="$W/db" CONDUIT_LOG=warn \
  /usr/bin/time -f "rebuild: %e s wall, %M KiB max RSS" "$BIN" search rebuild
echo "index after rebuild $(du -sm "$W/db/search" | cut -f1) MiB"
