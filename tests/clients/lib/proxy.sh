# Shared by the proxy checks (nginx-proxy.sh, squid-proxy.sh), sourced by
# each after it has defined `fail` and `say` and set `work` (its private
# directory) and `token`: starting the proxy, streams read with curl and
# stamped line by line, and waiting for a line to arrive.
# shellcheck shell=bash

# publisher_token: POLLCAST_TOKEN, or one minted with POLLCAST_TOKEN_SECRET
# (may publish and subscribe demo:*).
publisher_token() {
    if [[ -n "${POLLCAST_TOKEN:-}" ]]; then
        printf '%s\n' "$POLLCAST_TOKEN"
        return
    fi
    local secret="${POLLCAST_TOKEN_SECRET:?set POLLCAST_TOKEN, or POLLCAST_TOKEN_SECRET to mint one}"
    "${POLLCAST_BIN:-$repo_root/target/release/pollcast}" token --token-secret "$secret" \
        --sub demo --publish 'demo:*' --subscribe 'demo:*'
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

random_hex() {
    head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n'
}

# start_with_retries WHAT START: runs START (which picks a free port and
# starts the proxy) up to three times, since the port may be taken between
# picking and binding.
start_with_retries() {
    local what="$1" start="$2"
    for _ in 1 2 3; do
        if "$start"; then return 0; fi
    done
    fail "$what would not start (its logs follow)"
}

# wait_up PID SECONDS WHAT CHECK...: until CHECK succeeds (0) or the
# process PID exits (1: try again on another port); fails the script,
# saying WHAT did not happen, when SECONDS pass first.
wait_up() {
    local pid="$1" seconds="$2" what="$3"
    shift 3
    for _ in $(seq $((seconds * 20))); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" 2>/dev/null || true
            return 1
        fi
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    fail "$what within $seconds s"
}

# Each line read, stamped with the time it arrived (bash's clock, no fork
# per line).
stamp() {
    local line
    while IFS= read -r line; do
        printf '%s %s\n' "$EPOCHREALTIME" "$line"
    done
}

# read_stream NAME CURL...: runs the curl command (which writes the body to
# stdout), its output stamped into NAME.log, its stderr into
# NAME.curl-stderr; the command's pid in $curl_pid. Both processes are
# added to `readers`, which the caller stops on exit.
read_stream() {
    local name="$1"
    shift
    mkfifo "$work/$name.fifo"
    "$@" >"$work/$name.fifo" 2>"$work/$name.curl-stderr" &
    curl_pid=$!
    readers+=("$curl_pid")
    stamp <"$work/$name.fifo" >"$work/$name.log" &
    readers+=($!)
}

# wait_for_line FILE PATTERN WHAT: up to 5 s for a line matching PATTERN.
wait_for_line() {
    local file="$1" pattern="$2" what="$3"
    for _ in $(seq 500); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.01
    done
    fail "no $what within 5 s (expected a line matching '$pattern' in ${file##*/})"
}

# sleep_rest STARTED_AT SPACING_MS: sleeps what is left of SPACING_MS since
# STARTED_AT (an $EPOCHREALTIME).
sleep_rest() {
    local left_ms=$(( $2 - (${EPOCHREALTIME/./} - ${1/./}) / 1000 ))
    if (( left_ms > 0 )); then
        sleep "$(printf '%d.%03d' $((left_ms / 1000)) $((left_ms % 1000)))"
    fi
}

# event_id BODY: the `id` of a publish's JSON answer (empty if none).
event_id() {
    python3 -c 'import json, sys; print(json.loads(sys.argv[1])["id"])' "$1" 2>/dev/null || true
}

# print_logs FILE...: the end of each non-empty file, for a failed run.
print_logs() {
    local log
    for log in "$@"; do
        [[ -s "$log" ]] || continue
        printf -- '--- %s\n' "${log#"$work"/}" >&2
        tail -n 40 "$log" | cut -c1-400 >&2
    done
}
