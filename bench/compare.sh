#!/usr/bin/env bash
# Runs mxbench (../shared/bench) against a release build of conduit, then against Synapse
# with PostgreSQL (../shared/bench/run-synapse-baseline.sh), in the same sitting, and prints
# both summaries. Results go to $BENCH_RUN/results/ (default: ../bench-run next to the clone).
#
# Environment knobs:
#   REPEATS    runs of every scenario on each server          [default: 3]
#   SCENARIOS  scenarios                [default: latency throughput fanout initial-sync join register]
#   SYNAPSE=0  skip Synapse (e.g. when its figures from this sitting exist already)
#   PORT       conduit's port on 127.0.0.1                    [default: 18448]
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SHARED=${SHARED:-$(cd "$ROOT/../shared" && pwd)}
RUN=${BENCH_RUN:-$(cd "$ROOT/.." && pwd)/bench-run}
REPEATS=${REPEATS:-3}
SCENARIOS=${SCENARIOS:-"latency throughput fanout initial-sync join register"}
PORT=${PORT:-18448}
HS=http://127.0.0.1:$PORT
OUT=$RUN/results/conduit-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log"; }

MXBENCH_TARGET=${MXBENCH_TARGET:-$RUN/mxbench-target}
(cd "$SHARED/bench" && CARGO_TARGET_DIR=$MXBENCH_TARGET cargo build --release -q)
BIN=$MXBENCH_TARGET/release/mxbench
(cd "$ROOT" && cargo build --release -q)
CONDUIT=${CARGO_TARGET_DIR:-$ROOT/target}/release/conduit

DATA=$(mktemp -d)
CONDUIT_PID=
stop_conduit() {
    if [[ -n $CONDUIT_PID ]] && kill -0 "$CONDUIT_PID" 2>/dev/null; then
        kill "$CONDUIT_PID"; wait "$CONDUIT_PID" || true
    fi
    rm -rf "$DATA"
}
trap stop_conduit EXIT

cat >"$DATA/conduit.toml" <<TOML
[global]
server_name = "bench.local"
database_path = "$DATA/db"
address = "127.0.0.1"
port = $PORT
allow_registration = true
log = "warn"
[global.rate_limits]
enabled = false
TOML
"$CONDUIT" --config "$DATA/conduit.toml" >"$OUT/conduit.log" 2>&1 &
CONDUIT_PID=$!
for _ in $(seq 100); do curl -fsS "$HS/_matrix/client/versions" >/dev/null 2>&1 && break; sleep 0.1; done
log "conduit $(git -C "$ROOT" rev-parse --short HEAD) up (pid $CONDUIT_PID)"
sleep 2
log "idle: $(grep -E '^(Rss|Pss):' /proc/$CONDUIT_PID/smaps_rollup | tr -s ' ' | tr '\n' ' ')"

for rep in $(seq "$REPEATS"); do
    for scenario in $SCENARIOS; do
        name=conduit-$scenario-$rep
        log "$name"
        timeout 900 "$BIN" --hs "$HS" --server-pid "$CONDUIT_PID" --json "$OUT/$name.json" "$scenario" >"$OUT/$name.txt" 2>&1 \
            || log "$name FAILED (see $OUT/$name.txt)"
    done
done
log "after the runs: $(grep -E '^(Rss|Pss):' /proc/$CONDUIT_PID/smaps_rollup | tr -s ' ' | tr '\n' ' ')"
stop_conduit
trap - EXIT

"$BIN" summarize "$OUT"/conduit-*.json | tee "$OUT/summary-conduit.md"

if [[ ${SYNAPSE:-1} != 0 ]]; then
    log "Synapse, same scenarios"
    BENCH_RUN=$RUN REPEATS=$REPEATS DBS=postgres SCENARIOS="$SCENARIOS" PORT=18008 \
        bash "$SHARED/bench/run-synapse-baseline.sh"
fi
