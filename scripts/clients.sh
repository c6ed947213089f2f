#!/usr/bin/env bash
# Independent SSE clients against a live pollcast: clients nobody here
# wrote must work with it as they are.
#
# 1. Python httpx + httpx-sse (PyPI) walk through the README's curl
#    sessions (tests/clients/httpx_sse_walkthrough.py): stream, publish,
#    resume with Last-Event-ID, history and its long-poll, live polling.
# 2. `curl -N` through Debian's nginx with default proxy settings
#    (tests/clients/nginx-proxy.sh): every event arrives at once and one by
#    one, thanks to pollcast's `X-Accel-Buffering: no`.
# 3. curl and Python httpx through Debian's Squid as their forward proxy,
#    with Debian's default squid.conf, the kind of proxy that blocks
#    WebSockets (tests/clients/squid-proxy.sh): live events one by one,
#    heartbeats, a Last-Event-ID resume; and that a WebSocket handshake or
#    CONNECT through the same proxy does not get through.
# 4. The npm `eventsource` package on Node (tests/browser/
#    eventsource-client.test.mjs, its own server): named events, and
#    reconnection with Last-Event-ID across server kills without a gap or a
#    duplicate.
#
# 1 to 3 share one release server started here on a free loopback port,
# on a database of its own on the local Postgres (POLLCAST_TEST_PG, the
# admin URL, as for tests/browser), with a fresh token secret and a 1 s
# heartbeat (so heartbeats can be seen through the proxies). The server is
# stopped and its database dropped when this script exits, however it
# exits; its log stays in target/clients-run.
#
# Builds nothing: run `make release` (or `make clients`, which does) first.
# The Python packages live in a virtualenv under target/pyclients, created
# and filled on first use only (again when the pins below change); later
# runs need no network. The npm packages, nginx and squid come from
# `make browser-tools`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/python-venv.sh
source "$repo_root/scripts/lib/python-venv.sh"
bin="${POLLCAST_BIN:-$repo_root/target/release/pollcast}"
venv="$repo_root/target/pyclients"
run_dir="$repo_root/target/clients-run"
pg_admin="${POLLCAST_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
heartbeat_ms=1000
# httpx-sse 0.4 is written against httpx 0.28's streaming API.
requirements=('httpx==0.28.1' 'httpx-sse==0.4.3')

say() { printf 'clients: %s\n' "$*"; }
fail() { printf 'clients: FAILED: %s\n' "$*" >&2; exit 1; }

[[ -x "$bin" ]] || fail "no release binary at $bin: run \`make release\` (cargo build --release --bin pollcast) first"
[[ -d "$repo_root/tests/browser/node_modules/eventsource" ]] \
    || fail "the npm packages are missing in tests/browser: run \`make browser-tools\`"
command -v node >/dev/null || fail "node is missing: run \`make browser-tools\`"
[[ -x "${NGINX:-/usr/sbin/nginx}" ]] || fail "nginx is missing: run \`make browser-tools\`"
[[ -x "${SQUID:-/usr/sbin/squid}" ]] || fail "squid is missing: run \`make browser-tools\`"
psql "$pg_admin" -Atqc 'SELECT 1' >/dev/null 2>&1 \
    || fail "Postgres does not answer at $pg_admin: run \`make postgres\`"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

# --- the Python clients, on first use ----------------------------------------

ensure_venv "$venv" "${requirements[@]}"

# --- the server for the Python, nginx and squid clients ----------------------

rm -rf "$run_dir"
mkdir -p "$run_dir"
secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
admin_key="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
database="pollcast_clients_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"
database_url="${pg_admin%/*}/$database"

server_pid=
database_made=
child=
stop_server() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        # pollcast ends its streams and exits in milliseconds on SIGTERM.
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=
    if [[ -n "$database_made" ]]; then
        psql "$pg_admin" -Atqc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null \
            || echo "clients: could not drop database $database" >&2
        database_made=
    fi
}
cleanup() {
    # A client still running (interrupted): TERM lets the scripts clean up.
    if [[ -n "$child" ]] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    stop_server
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs one client in the background and waits for it, so that a signal to
# this script reaches the trap at once and the trap can stop the client.
run() {
    "$@" &
    child=$!
    local status=0
    wait "$child" || status=$?
    child=
    return "$status"
}

psql "$pg_admin" -Atqc "CREATE DATABASE $database" >/dev/null
database_made=1

# Port 0: the kernel picks a free port, and the server logs the address.
env -u DATABASE_URL RUST_LOG=info "$bin" \
    --listen 127.0.0.1:0 \
    --database-url "$database_url" \
    --token-secret "$secret" \
    --admin-key "$admin_key" \
    --heartbeat "${heartbeat_ms}ms" \
    >"$run_dir/server.log" 2>&1 &
server_pid=$!

base=
for _ in $(seq 150); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        tail -n 20 "$run_dir/server.log" >&2
        fail "the server exited at start (log above)"
    fi
    addr="$(grep -m1 'pollcast listening' "$run_dir/server.log" | grep -oE '127\.0\.0\.1:[0-9]+' || true)"
    if [[ -n "$addr" ]] && curl -fsS -o /dev/null "http://$addr/readyz" 2>/dev/null; then
        base="http://$addr"
        break
    fi
    sleep 0.1
done
[[ -n "$base" ]] || fail "the server did not become ready in 15 s (log: $run_dir/server.log)"
say "pollcast on $base, database $database"

started=$SECONDS
export POLLCAST_URL="$base" POLLCAST_TOKEN_SECRET="$secret" POLLCAST_BIN="$bin"
export POLLCAST_ADMIN_KEY="$admin_key"

say "1/4 Python httpx-sse: the README walk-through"
run "$venv/bin/python" "$repo_root/tests/clients/httpx_sse_walkthrough.py"

say "2/4 curl -N through nginx (default proxy settings)"
NGINX_PING_MS="$heartbeat_ms" run "$repo_root/tests/clients/nginx-proxy.sh"

say "3/4 curl and httpx through squid (Debian's default forward-proxy config)"
SQUID_PING_MS="$heartbeat_ms" SQUID_PYTHON="$venv/bin/python" \
    run "$repo_root/tests/clients/squid-proxy.sh"
# Webhooks (#19): the PyPI standardwebhooks package (its own venv, pinned)
# verifies every delivery to a receiver of tests/clients/standardwebhooks_receiver.py.
ensure_venv "$repo_root/target/pywebhooks" 'standardwebhooks==1.1.0'
say "webhooks: every delivery verified by standardwebhooks (PyPI)"
run "$repo_root/target/pywebhooks/bin/python" "$repo_root/tests/clients/standardwebhooks_receiver.py"

# A panic in a handler may still have been answered; the log tells.
if grep -q 'panicked' "$run_dir/server.log"; then
    grep -m5 -A3 'panicked' "$run_dir/server.log" >&2
    fail "the server panicked (log: $run_dir/server.log)"
fi
stop_server
unset POLLCAST_URL POLLCAST_TOKEN_SECRET POLLCAST_ADMIN_KEY

say "4/4 npm eventsource on Node $(node --version) (its own server)"
cd "$repo_root/tests/browser"
run node --test eventsource-client.test.mjs

say "all four clients ok in $((SECONDS - started)) s"
