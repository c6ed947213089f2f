#!/usr/bin/env bash
# SSE through a forward proxy of the kind that blocks WebSockets: Debian's
# Squid, with Debian's own /etc/squid/squid.conf for everything that decides
# access and forwarding, run as a private instance for the length of this
# script. Clients use it as their HTTP proxy (`curl --proxy`, httpx
# `proxy=`), the way browsers and scripts in an office network do.
#
# The private instance's squid.conf is Debian's default file copied as it
# is, with exactly these changes, all about where it runs, none about what
# it lets through:
# - `http_port 3128` becomes `http_port 127.0.0.1:<free port>`: 3128 may be
#   taken (by the system's own squid), and a test proxy must not be
#   reachable from the network;
# - `coredump_dir /var/spool/squid` becomes the private directory;
# - appended: `pid_filename`, `cache_log` and `access_log` in the private
#   directory (the defaults, /run/squid.pid and /var/log/squid, belong to the
#   system's squid); the access log is `stdio:` rather than the default
#   `daemon:`, which would start a log-writing helper process;
# - appended: `pinger_enable off`: the ICMP pinger helper only measures
#   round trips to cache peers (there are none), and it outlives a fast
#   shutdown of squid by seconds; off, nothing outlives this script.
# Untouched, so in force: the localnet/Safe_ports/SSL_ports ACLs, `deny
# !Safe_ports`, `deny CONNECT !SSL_ports`, `allow localhost`, `deny all`,
# the /etc/squid/conf.d include, the refresh_patterns, the memory-only
# cache, and squid's switch to its user `proxy` when started as root (the
# private directory is then handed to that user). Otherwise squid runs as
# the current user.
#
# Loopback: Squid's documentation suggests `http_access deny to_localhost`,
# but Debian 12 ships it commented out, so this proxy may reach pollcast on
# 127.0.0.1 and does. Should Debian enable it one day, the script stops
# with a message saying so rather than weaken the rule.
#
# Asserts, everything through squid (its Via header on each answer, and
# its access log for the publishes, prove that nothing went around it):
# - the stream answers 200, text/event-stream, no-cache, no Content-Length;
# - SQUID_EVENTS (8) events, each published through squid and awaited on
#   the open `curl -N` stream before the next (SQUID_SPACING_MS, 300,
#   between publishes), each arrive complete within SQUID_MAX_LATENCY_MS
#   (200) of the start of its POST, in order, once, with the envelope;
# - with SQUID_PING_MS set to the server's --heartbeat (say 1000), `: ping`
#   comments arrive one by one, never more than 1.5 heartbeats apart;
# - after the stream is dropped and 3 events are published, a new stream
#   with `Last-Event-ID: <last seen>` starts with connection:reconnected
#   (replayFrom that id, replayCount 3, exact), then exactly the 3 missed
#   events in order, then a live one;
# - a bystander stream on the same URL, open from before the first event to
#   the end, gets every event once, in order. Squid keeps that stream in its
#   memory cache as it passes, so the next stream on the same URL finds it
#   there (X-Cache-Lookup: HIT, printed); pollcast's Cache-Control: no-cache
#   makes squid ask pollcast anyway (TCP_REFRESH_MODIFIED in its log). Each
#   stream must say X-Cache: MISS: none is served from squid's cache, and
#   the resume's Last-Event-ID reaches pollcast;
# - with SQUID_PYTHON set to a Python holding httpx and httpx-sse (the
#   venv of scripts/clients.sh): the same live and resume checks with
#   httpx's `proxy=` and httpx-sse;
# - what squid does to WebSockets: a handshake (GET with `Upgrade:
#   websocket`) that a tiny local server answers with 101 directly arrives
#   there through squid without its Upgrade header, so no 101 comes back;
#   and `CONNECT` to pollcast's port (how browsers tunnel ws:// through a
#   proxy) is refused with 403 by `deny CONNECT !SSL_ports`. SSE needs
#   neither.
#
# Environment: POLLCAST_URL (the server, http://127.0.0.1:port), and
# POLLCAST_TOKEN (may publish and subscribe demo:*) or POLLCAST_TOKEN_SECRET
# to mint one with POLLCAST_BIN (target/release/pollcast). SQUID is the
# binary (/usr/sbin/squid), SQUID_CONF the default config to start from
# (/etc/squid/squid.conf). squid's files go to target/squid-proxy (or a
# temporary directory when root runs this from a tree squid's user cannot
# enter); squid and the clients are stopped when the script exits, however
# it exits, and on failure the logs are printed first.
set -euo pipefail
# $EPOCHREALTIME with a decimal point, whatever the locale.
export LC_ALL=C

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
upstream="${POLLCAST_URL:?set POLLCAST_URL to the pollcast server, e.g. http://127.0.0.1:8080}"
upstream="${upstream%/}"
squid="${SQUID:-/usr/sbin/squid}"
default_conf="${SQUID_CONF:-/etc/squid/squid.conf}"
events="${SQUID_EVENTS:-8}"
spacing_ms="${SQUID_SPACING_MS:-300}"
max_latency_ms="${SQUID_MAX_LATENCY_MS:-200}"
ping_ms="${SQUID_PING_MS:-}"
python="${SQUID_PYTHON:-}"
missed=3

say() { printf 'squid-proxy: %s\n' "$*"; }
fail() { printf 'squid-proxy: FAILED: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib/proxy.sh
source "$repo_root/tests/clients/lib/proxy.sh"

[[ -x "$squid" ]] || fail "no squid at $squid (Debian: apt-get install squid; make browser-tools does)"
[[ -r "$default_conf" ]] || fail "no default config at $default_conf (Debian's squid package ships it)"
[[ "$upstream" =~ ^http://127\.0\.0\.1:[0-9]+$ ]] \
    || fail "POLLCAST_URL must be http://127.0.0.1:port, not '$upstream'"
upstream_port="${upstream##*:}"

conf_dir="$(dirname "$default_conf")"
if grep -Eqs '^[[:space:]]*http_access[[:space:]]+deny[[:space:]]+to_localhost' \
    "$default_conf" "$conf_dir"/conf.d/*.conf; then
    fail "this squid's default config denies loopback destinations (http_access deny to_localhost);" \
        "Debian 12's does not: serve pollcast on a non-loopback address to test through it"
fi
# The two lines of the default that change; if Debian's file no longer has
# them as they were, the changes above need a new look.
for line in 'http_port 3128' 'coredump_dir /var/spool/squid'; do
    [[ "$(grep -cx -- "$line" "$default_conf")" == 1 ]] \
        || fail "$default_conf does not have exactly one line '$line': see the header of $0"
done

token="$(publisher_token)"

# --- the private directory ---------------------------------------------------

work="$repo_root/target/squid-proxy"
rm -rf "$work"
mkdir -p "$work"
if [[ "$EUID" == 0 ]]; then
    # Started as root, squid works as the user it was built for (Debian:
    # proxy); that user writes the logs.
    squid_user="$("$squid" -v | grep -o -- "--with-default-user=[^' ]*" | cut -d= -f2 || true)"
    squid_user="${squid_user:-nobody}"
    chown "$squid_user" "$work"
    if ! runuser -u "$squid_user" -- test -w "$work" 2>/dev/null; then
        rm -rf "$work"
        work="$(mktemp -d "${TMPDIR:-/tmp}/pollcast-squid.XXXXXX")"
        chmod 755 "$work"
        chown "$squid_user" "$work"
    fi
fi

squid_pid=
readers=()
status=1
cleanup() {
    for pid in "${readers[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [[ -n "$squid_pid" ]]; then
        # INT: squid's fast shutdown. TERM would wait shutdown_lifetime (30 s)
        # for open streams.
        kill -INT "$squid_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$squid_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$squid_pid" 2>/dev/null || true
    fi
    for pid in "${readers[@]}" $squid_pid; do wait "$pid" 2>/dev/null || true; done
    if [[ "$status" != 0 ]]; then
        print_logs "$work"/squid.stderr "$work"/*.headers "$work"/*.log
    fi
    if [[ "$work" != "$repo_root/target/squid-proxy" ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every curl here goes through squid; --noproxy '' keeps a NO_PROXY in the
# environment from sending loopback requests around it.
pcurl() { curl --noproxy '' --proxy "$proxy" "$@"; }

# --- squid: Debian's config, but for where it runs ---------------------------

start_squid() {
    port="$(free_port)"
    proxy="http://127.0.0.1:$port"
    {
        printf '# Generated by tests/clients/squid-proxy.sh from %s:\n' "$default_conf"
        printf '# port and paths changed, see that script.\n'
        sed -e "s|^http_port 3128\$|http_port 127.0.0.1:$port|" \
            -e "s|^coredump_dir /var/spool/squid\$|coredump_dir $work|" \
            "$default_conf"
        printf '\n# Private instance (tests/clients/squid-proxy.sh)\n'
        printf 'pid_filename %s\n' "$work/squid.pid"
        printf 'cache_log %s\n' "$work/cache.log"
        printf 'access_log stdio:%s\n' "$work/access.log"
        printf 'pinger_enable off\n'
    } >"$work/squid.conf"
    # -N: in the foreground, one process (no daemon, no SMP kids).
    "$squid" -N -f "$work/squid.conf" >"$work/squid.stderr" 2>&1 &
    squid_pid=$!
    wait_up "$squid_pid" 10 "squid did not forward /healthz to $upstream" \
        pcurl -fsS -o /dev/null "$upstream/healthz" || { squid_pid=; return 1; }
}
"$squid" -k parse -f "$default_conf" >/dev/null 2>&1 || fail "squid cannot parse $default_conf"
start_with_retries squid start_squid
say "squid $("$squid" -v | sed -n 's/^Squid Cache: Version //p') as $(ps -o user= -p "$squid_pid"), Debian's config, on $proxy; pollcast at $upstream"

# --- WebSockets through the same proxy ---------------------------------------

python3 "$repo_root/tests/clients/websocket_via_proxy.py" "$port" "$upstream_port"

# --- live events, heartbeats and a resume, with curl -------------------------

topic="demo:squid-$(random_hex)"

# open_stream NAME [CURL ARG...]: `curl -N` on the topic through squid; its
# output, stamped, goes to NAME.log, its response head to NAME.headers, and
# its pid to $curl_pid.
open_stream() {
    local name="$1"
    shift
    # curl itself, not through pcurl: $curl_pid must be curl's, to stop it.
    read_stream "$name" curl --noproxy '' --proxy "$proxy" -sS -N -D "$work/$name.headers" \
        -H "Authorization: Bearer $token" "$@" "$upstream/v1/events?topic=$topic"
}

# publish NAME N: one event through squid; appends "start id body" to NAME
# and sets $id.
publish() {
    local started_at="$EPOCHREALTIME" answer code body
    answer="$(pcurl -sS -w '\n%{http_code}' -D "$work/publish.headers" -X POST \
        -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
        -d "{\"type\":\"demo:tick\",\"payload\":{\"n\":$2}}" \
        "$upstream/v1/topics/$topic/events")"
    code="${answer##*$'\n'}"
    body="${answer%$'\n'*}"
    [[ "$code" == 201 ]] || fail "publish $2 through squid: HTTP $code: $body"
    grep -qi '^via:.*squid' "$work/publish.headers" || fail "publish $2: no Via from squid in the answer"
    id="$(event_id "$body")"
    [[ "$id" =~ ^[0-9]+$ ]] || fail "publish $2: no id in $body"
    printf '%s %s %s\n' "$started_at" "$id" "$body" >>"$work/$1"
}

open_stream bystander
wait_for_line "$work/bystander.log" 'event: connection:established' "connection:established through squid"
open_stream live
live_pid="$curl_pid"
wait_for_line "$work/live.log" 'event: connection:established' "connection:established through squid"

say "publishing $events events on $topic, each awaited on the stream before the next"
: >"$work/published"
for i in $(seq "$events"); do
    started_at="$EPOCHREALTIME"
    publish published "$i"
    wait_for_line "$work/live.log" "^[0-9.]* id: $id\$" "event $id through squid"
    sleep_rest "$started_at" "$spacing_ms"
done
last_seen="$id"
if [[ -n "$ping_ms" ]]; then
    # Let a few heartbeats through after the events.
    sleep "$(( (3 * ping_ms + 999) / 1000 )).2"
else
    sleep 0.3 # time for a duplicate to show up, if there were one
fi
kill "$live_pid" 2>/dev/null || true
wait "$live_pid" 2>/dev/null || true

: >"$work/missed"
for i in $(seq "$missed"); do publish missed "$((events + i))"; done
open_stream resume -H "Last-Event-ID: $last_seen"
wait_for_line "$work/resume.log" "^[0-9.]* id: $id\$" "the last missed event ($id) after the resume"
: >"$work/after"
publish after "$((events + missed + 1))"
wait_for_line "$work/resume.log" "^[0-9.]* id: $id\$" "a live event ($id) after the resume"
wait_for_line "$work/bystander.log" "^[0-9.]* id: $id\$" "the last event ($id) on the bystander stream"
sleep 0.3 # time for a duplicate to show up, if there were one

python3 - "$work" "$max_latency_ms" "${ping_ms:-0}" "$last_seen" "$repo_root/tests/clients/lib" <<'PY'
import json
import re
import sys
from pathlib import Path

work, max_latency_ms, ping_ms, last_seen = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
sys.path.insert(0, sys.argv[5])
import sse_log  # noqa: E402
from sse_log import Failed, heartbeats, stored  # noqa: E402


def fail(message):
    print(f"squid-proxy: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def frames(name):
    return sse_log.frames(work / f"{name}.log")


def published(name):
    return sse_log.published(work / name)


def check_head(name):
    status, headers = sse_log.response_head(work / f"{name}.headers")
    if not re.match(r"HTTP/1\.[01] 200", status):
        fail(f"{name} stream through squid: status line {status!r}")
    if "squid" not in headers.get("via", ""):
        fail(f"{name} stream: no Via from squid ({headers.get('via')!r}): it did not go through squid")
    for key, expected in (("content-type", "text/event-stream"), ("cache-control", "no-cache")):
        if headers.get(key, "").split(";")[0].strip() != expected:
            fail(f"{name} stream through squid: {key} {headers.get(key)!r}, expected {expected!r}")
    if "content-length" in headers:
        fail(f"{name} stream through squid: unexpected content-length {headers['content-length']}")
    if not headers.get("x-cache", "").startswith("MISS"):
        fail(f"{name} stream: squid answered from its cache (X-Cache: {headers.get('x-cache')!r})")
    return headers.get("x-cache-lookup", "").split(" ")[0]


def check_events(what, sent, got):
    if [f["id"] for _, f in got] != [event_id for _, event_id, _ in sent]:
        fail(f"{what}: ids {[f['id'] for _, f in got]}, expected exactly "
             f"{[event_id for _, event_id, _ in sent]} (in order, once each)")
    latencies = []
    for (sent_at, event_id, envelope), (got_at, fields) in zip(sent, got):
        if fields.get("event") != envelope["type"] or json.loads(fields.get("data", "null")) != envelope:
            fail(f"{what}: event {event_id} framed {fields}, expected the envelope {envelope}")
        latencies.append((got_at - sent_at) * 1000)
    return latencies


check_head("bystander")
lookups = f"{check_head('live')}, {check_head('resume')}"

live = frames("live")
if not live or live[0][1].get("event") != "connection:established":
    fail(f"the first frame through squid is not connection:established: {live[:1]}")
sent = published("published")
latencies = check_events("live stream through squid", sent, stored(live))
slow = [f"{ms:.0f}" for ms in latencies if ms > max_latency_ms]
if slow:
    fail(f"events reached curl {', '.join(slow)} ms after their publish started "
         f"(limit {max_latency_ms:.0f} ms): squid held them back")
print(f"squid-proxy: {len(sent)} events one by one, publish-to-curl "
      f"{min(latencies):.0f}-{max(latencies):.0f} ms (limit {max_latency_ms:.0f})")

if ping_ms:
    try:
        print(f"squid-proxy: {heartbeats(live, ping_ms, 'squid')}")
    except Failed as failed:
        fail(str(failed))

resume = frames("resume")
first = resume[0][1] if resume else {}
if first.get("event") != "connection:reconnected":
    fail(f"the first frame after the resume through squid is not connection:reconnected: {resume[:1]}")
payload = json.loads(first["data"])["payload"]
missed, after = published("missed"), published("after")
if (payload.get("replayFrom"), payload.get("replayCount"), payload.get("replayCountExact")) != (last_seen, len(missed), True):
    fail(f"connection:reconnected says {payload}, expected replayFrom {last_seen}, replayCount {len(missed)}, exact")
got = stored(resume)
check_events("resumed stream through squid", missed + after, got)
live_ms = (got[-1][0] - after[0][0]) * 1000
if live_ms > max_latency_ms:
    fail(f"the live event after the resume took {live_ms:.0f} ms through squid (limit {max_latency_ms:.0f})")
print(f"squid-proxy: resume with Last-Event-ID {last_seen}: exactly the {len(missed)} missed events "
      f"{[e for _, e, _ in missed]} in order, then live ({live_ms:.0f} ms)")

bystander = stored(frames("bystander"))
check_events("bystander stream through squid", sent + missed + after, bystander)
print(f"squid-proxy: the bystander stream got all {len(bystander)} events in order; the later streams' "
      f"cache lookups: {lookups}, each answered by pollcast (X-Cache: MISS)")
PY

# The publishes were answered with squid's Via; its log has each of them.
posts="$(grep -c " TCP_MISS/201 [0-9]* POST $upstream/v1/topics/$topic/events " "$work/access.log" || true)"
(( posts == events + missed + 1 )) \
    || fail "squid's access log has $posts publishes on $topic, expected $((events + missed + 1))"

# --- the same with Python httpx ----------------------------------------------

if [[ -n "$python" ]]; then
    "$python" "$repo_root/tests/clients/httpx_via_proxy.py" "$proxy" "$upstream" "$token" "$topic" "$max_latency_ms"
else
    say "SQUID_PYTHON not set: the httpx checks are skipped"
fi

status=0
say "ok"
