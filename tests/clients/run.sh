#!/usr/bin/env bash
# Drives a freshly built conduit with real Matrix client libraries.
#
#   tests/clients/run.sh            # matrix-nio (Python)
#   tests/clients/run.sh nio js     # and matrix-js-sdk (Node >= 20); each gets its own server
#
# Builds the server (`cargo build`), starts it on a free loopback port with a temporary
# database, registration open and rate limits off, runs the client test against it and
# stops the server on exit, whatever happens. nio runs twice: with open registration and
# on a server where only a registration token lets users in. The client libraries are installed once
# into a cache directory:
#   CLIENT_TEST_VENV   Python venv (default ${XDG_CACHE_HOME:-$HOME/.cache}/conduit-test-venv)
#   CLIENT_TEST_NODE   npm prefix for matrix-js-sdk (default .../conduit-test-node)
#   CLIENT_TEST_BIN    use this conduit binary instead of building one
#   CLIENT_TEST_KEEP=1 keep the temporary directory (databases, configs, server logs)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}
venv=${CLIENT_TEST_VENV:-$cache/conduit-test-venv}
node_dir=${CLIENT_TEST_NODE:-$cache/conduit-test-node}
nio_spec='matrix-nio>=0.25,<0.27'
js_spec='matrix-js-sdk@37.5.0'

log() { printf '[run.sh] %s\n' "$*" >&2; }

clients=("$@")
[[ ${#clients[@]} -gt 0 ]] || clients=(nio)
for client in "${clients[@]}"; do
    case $client in
        nio | js) ;;
        *) echo "usage: $0 [nio] [js]" >&2; exit 2 ;;
    esac
done
want() { [[ " ${clients[*]} " == *" $1 "* ]]; }

# --- client libraries -----------------------------------------------------------------
# The venv is needed in any case: its Python also runs the small helpers below.
if ! "$venv/bin/python" -c 'import nio' 2>/dev/null; then
    log "creating venv $venv with $nio_spec"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$nio_spec"
fi
log "matrix-nio $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-nio"))')"
if want js; then
    if [[ ! -f "$node_dir/node_modules/matrix-js-sdk/package.json" ]]; then
        log "installing $js_spec into $node_dir"
        mkdir -p "$node_dir"
        [[ -f "$node_dir/package.json" ]] ||
            echo '{"name": "conduit-client-test", "private": true, "type": "module"}' >"$node_dir/package.json"
        (cd "$node_dir" && npm install --no-audit --no-fund --silent "$js_spec")
    fi
    log "matrix-js-sdk $(node -p "require('$node_dir/node_modules/matrix-js-sdk/package.json').version")"
fi

# --- server binary --------------------------------------------------------------------
if [[ -n "${CLIENT_TEST_BIN:-}" ]]; then
    bin=$CLIENT_TEST_BIN
else
    log "building conduit"
    (cd "$root" && nice cargo build --quiet --bin conduit)
    target_dir=$(cd "$root" && cargo metadata --format-version 1 --no-deps |
        "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    bin=$target_dir/debug/conduit
fi
[[ -x "$bin" ]] || { log "no conduit binary at $bin"; exit 1; }

# --- server ---------------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/conduit-client-test.XXXXXX")
server_pid=
run_dir=
stop_server() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=
}
cleanup() {
    local status=$?
    stop_server
    if [[ $status -ne 0 && -n "$run_dir" && -f "$run_dir/server.log" ]]; then
        log "last lines of the server log ($run_dir/server.log):"
        tail -n 40 "$run_dir/server.log" >&2 || true
    fi
    if [[ "${CLIENT_TEST_KEEP:-}" == 1 ]]; then
        log "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

probe() {
    "$venv/bin/python" -c 'import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/_matrix/client/versions", timeout=1).read()' "$1" 2>/dev/null
}

# Starts a server with a fresh database in $tmp/$1; sets run_dir, server_pid and url.
# Registration is open, or with $2 = a token, possible only with that token.
start_server() {
    run_dir=$tmp/$1
    local registration="allow_registration = true"
    if [[ -n "${2:-}" ]]; then
        registration="allow_registration = false
registration_token = \"$2\""
    fi
    mkdir -p "$run_dir"
    local port
    port=$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    cat >"$run_dir/conduit.toml" <<EOF
[global]
server_name = "localhost"
database_path = "$run_dir/db"
address = "127.0.0.1"
port = $port
$registration
allow_federation = false
log = "info,conduit=debug,ruma_state_res=warn"

[global.rate_limits]
enabled = false
EOF
    # The server reads every CONDUIT_* variable as a configuration key: start it with
    # none, so the file above is the whole configuration.
    local unset_env=() name
    for name in $(compgen -e); do
        if [[ $name == CONDUIT_* ]]; then unset_env+=(-u "$name"); fi
    done
    env "${unset_env[@]}" -u RUST_LOG NO_COLOR=1 "$bin" --config "$run_dir/conduit.toml" >"$run_dir/server.log" 2>&1 &
    server_pid=$!
    url="http://127.0.0.1:$port"
    local up=0
    for _ in $(seq 300); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            log "conduit exited during startup"
            exit 1
        fi
        if probe "$url"; then up=1; break; fi
        sleep 0.1
    done
    [[ $up == 1 ]] || { log "conduit did not answer at $url within 30 s"; exit 1; }
    log "conduit (pid $server_pid) is up at $url"
}

# --- clients --------------------------------------------------------------------------
if want nio; then
    start_server nio
    log "running the matrix-nio smoke test (open registration)"
    timeout --kill-after=5 120 "$venv/bin/python" "$here/nio_smoke.py" "$url"
    stop_server
    token=$("$venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(16))')
    start_server nio-token "$token"
    log "running the matrix-nio smoke test (registration token only)"
    NIO_SMOKE_REGISTRATION_TOKEN=$token \
        timeout --kill-after=5 120 "$venv/bin/python" "$here/nio_smoke.py" "$url"
    stop_server
fi
if want js; then
    start_server js
    log "running the matrix-js-sdk smoke test"
    # Node resolves matrix-js-sdk from the script's directory: run a copy next to it.
    cp "$here/js_smoke.mjs" "$node_dir/js_smoke.mjs"
    timeout --kill-after=5 120 node "$node_dir/js_smoke.mjs" "$url"
    stop_server
fi
log "all client tests passed (${clients[*]})"
