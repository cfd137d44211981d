# Sourced by the bench scripts. start_conduit ADDR DB LOG [VAR=VALUE ...] starts $BIN on
# ADDR:8448 (plain HTTP, registration open, no rate limits, the extra settings given) and
# waits until it answers; PID is its process id.
start_conduit() {
  local addr=$1 db=$2 log=$3
  shift 3
  env CONDUIT_SERVER_NAME="$addr:8448" CONDUIT_ADDRESS="$addr" CONDUIT_PORT=8448 \
    CONDUIT_DATABASE_PATH="$db" CONDUIT_ALLOW_REGISTRATION=true \
    CONDUIT_RATE_LIMITS='{enabled=false}' CONDUIT_LOG=warn "$@" "$BIN" >"$log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do
    curl -fs "http://$addr:8448/_matrix/client/versions" >/dev/null && return
    sleep 0.1
  done
}
