#!/usr/bin/env bash
# Hostile input: schemathesis (PyPI) generates valid and invalid requests
# from openapi.yaml, sends them to a live pollcast and checks every answer:
# no 5xx; status code, Content-Type, headers and body as documented for the
# operation; requests that break the schema refused with a 4xx; requests
# without their token refused; other methods answered 405 with Allow; and,
# in chains of calls, a resource just created can be read back.
#
# Once per event store, because what breaks can differ between them:
# Postgres cannot store some text the in-memory store can (NUL, U+0000),
# and a write it refuses can fail the other commands of its batch.
# 1. The in-memory store.
# 2. Postgres: a database with a random name on the local cluster
#    (POLLCAST_TEST_PG, the admin URL, as for scripts/clients.sh; started by
#    scripts/ensure-postgres.sh when it is down), to which the server
#    applies sql/ at start; dropped when this script exits, however it
#    exits.
# Each store gets a fresh release server on a free loopback port, with a
# fresh token secret and admin key, stopped when its run ends.
#
# Before each run, a few sessions, polls, a participant and two streams
# (held open) are made over REST, so that operations get past 404: their
# ids are offered to schemathesis as dictionary values (used in most
# generated requests, the rest stay random). The text fields of the
# polling bodies get text with NUL in a tenth of the requests.
#
# One request at a time: with two workers, Hypothesis sometimes fails inside
# Python 3.11's ast.parse ("AST constructor recursion depth mismatch"), a
# race between threads, and the run errors out.
# The phases, in this order:
# - examples, coverage and fuzzing, one operation at a time;
# - stateful: chains of calls that follow the `links` of openapi.yaml (make
#   a session, then start it, join it, watch it, add a poll; add a poll,
#   then open it, vote, read the results...), so that later calls act on
#   what earlier calls made; only those links, none inferred.
# Tokens follow the ids (scripts/lib/schemathesis_tokens.py, loaded as
# schemathesis hooks): a polling command carries the presenter or
# participant token of the session its path names, learnt from the
# answers, or the token a link brought; the topic operations carry a
# generic token that may publish and read every topic.
#
# Made finite, because they would not end in time:
# - the SSE streams (streamEvents, streamSession, adminTail), endless by design, are
#   read up to their first event (connection:*, or the first replayed one),
#   which is checked against its schema, data included, and then closed; so
#   a `connectionId` that a link takes from such a stream names a closed
#   stream (404), and the connection endpoints reach open ones through the
#   two streams held open for them (dictionary values);
# - `wait` of listEvents is always 0: a long-poll holds a request for up to
#   30 s (its validation is covered by tests/api).
#
# Bounded by time: each store runs for SCHEMATHESIS_MAX_TIME seconds
# (default 75, so about three minutes in all with the set-up). Within it,
# every phase runs once, at most SCHEMATHESIS_MAX_EXAMPLES examples per
# operation (default 100) and SCHEMATHESIS_SCENARIOS stateful scenarios of
# at most 6 calls (default 100); then fuzzing and stateful run again with
# the next seeds until the time is spent. A time budget rather than a count
# only, because a stateful suite ends early whenever replaying a scenario
# gets other answers from the live server (Hypothesis calls that flaky),
# anywhere from a dozen scenarios to all of them.
#
# The seed is random and printed first; SCHEMATHESIS_SEED=<n> runs with that
# one again: the same generated inputs, as far as the time goes (the
# answers of the live server, and so the chains that follow them, may
# differ). SCHEMATHESIS_STORES ("memory postgres") picks the stores.
# Arguments go to `schemathesis run` (for instance `--report har`). Server
# logs, configurations and reports stay in target/schemathesis-run/<store>/.
#
# schemathesis lives in a virtualenv under target/schemathesis, created and
# filled on first use only; later runs reuse it and need no network. The
# server is target/release/pollcast, built here, or POLLCAST_BIN (then
# nothing is built).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/python-venv.sh
source "$repo_root/scripts/lib/python-venv.sh"
spec="$repo_root/openapi.yaml"
venv="$repo_root/target/schemathesis"
run_dir="$repo_root/target/schemathesis-run"
bin="${POLLCAST_BIN:-$repo_root/target/release/pollcast}"
pg_admin="${POLLCAST_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
# 4.x reads OpenAPI 3.1 without flags; its CLI and configuration file change
# between minor releases, so stay on the one this script was written for.
requirement='schemathesis>=4.32,<4.33'
max_time="${SCHEMATHESIS_MAX_TIME:-75}"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
scenarios="${SCHEMATHESIS_SCENARIOS:-100}"
stores="${SCHEMATHESIS_STORES:-memory postgres}"
for store in $stores; do
    [[ "$store" == memory || "$store" == postgres ]] \
        || { echo "schemathesis: unknown store '$store' in SCHEMATHESIS_STORES (memory, postgres)" >&2; exit 2; }
done
# Random unless given, and said before anything else can fail, so that any
# failure below can be replayed with the same inputs.
seed="${SCHEMATHESIS_SEED:-$(od -An -tu4 -N4 /dev/urandom | tr -d ' ')}"
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "schemathesis: SCHEMATHESIS_SEED must be an integer, not '$seed'" >&2; exit 2; }
echo "schemathesis: seed $seed (replay with SCHEMATHESIS_SEED=$seed)"

ensure_venv "$venv" "$requirement"

if [[ -z "${POLLCAST_BIN:-}" ]]; then
    (cd "$repo_root" && "${CARGO:-cargo}" build -q --release --bin pollcast)
fi
[[ -x "$bin" ]] || { echo "schemathesis: no server binary at $bin" >&2; exit 1; }
if [[ " $stores " == *" postgres "* ]]; then
    "$repo_root/scripts/ensure-postgres.sh"
fi

rm -rf "$run_dir"
mkdir -p "$run_dir"
database="pollcast_schemathesis_$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')"

server_pid=
fixtures_pid=
child=
database_made=
# Stops what the current store started: the schemathesis run, the process
# holding the fixture streams, then the server.
stop_store() {
    local pid
    for pid in "$child" "$fixtures_pid" "$server_pid"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    child= fixtures_pid= server_pid=
}
cleanup() {
    stop_store
    if [[ -n "$database_made" ]]; then
        psql "$pg_admin" -Atqc "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null \
            || echo "schemathesis: could not drop database $database" >&2
        database_made=
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a command in the background and waits for it, so that a signal to
# this script reaches the trap at once and the trap can stop the command.
run() {
    "$@" &
    child=$!
    local status=0
    wait "$child" || status=$?
    child=
    return "$status"
}

# A generic token that may publish to and read every topic: one selector
# per topic depth (1 to 8 segments).
generic_token() {
    local selectors=() pattern='*'
    for _ in $(seq 8); do
        selectors+=(--publish "$pattern" --subscribe "$pattern")
        pattern="$pattern:*"
    done
    "$bin" token --token-secret "$1" --sub schemathesis "${selectors[@]}"
}

# Fixtures over REST, the schemathesis configuration that uses them
# (schemathesis.toml) and the tokens for the hooks (tokens.json), then two
# streams held open until this process is stopped. Arguments: base URL,
# admin key, generic token, max examples, scenarios, the directory to write
# to (`ready` is written last).
fixtures_program=$(cat <<'PY'
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request

base, admin_key, generic_token, max_examples, scenarios, out = sys.argv[1:]


def call(method, path, body=None, token=None, admin=False):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if body is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if admin:
        request.add_header("X-Admin-Key", admin_key)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def session(title):
    created = call("POST", "/v1/sessions", {"title": title}, admin=True)
    return created, created["presenterToken"]


def poll(session_id, token, **fields):
    return call("POST", f"/v1/sessions/{session_id}/polls", fields, token=token)


# Session A is where votes happen: active, with a participant, a draft
# choice poll, and an open rating poll that is not anonymous (so its voters
# can be listed) on a scale wide enough that generated ratings often fit.
a, a_presenter = session("schemathesis A")
a_id = a["sessionId"]
participant = call("POST", f"/v1/sessions/{a_id}/participants", {"displayName": "fuzz"})
call("POST", f"/v1/sessions/{a_id}/start", token=a_presenter)
a_choice = poll(a_id, a_presenter, question="Which?", pollType="multiple_choice",
                options=["one", "two"])
a_rating = poll(a_id, a_presenter, question="How much?", pollType="rating_scale",
                minRating=-50, maxRating=50, isAnonymous=False)
call("POST", f"/v1/polls/{a_rating['pollId']}/activate", token=a_presenter)

# Session B, a draft, is for startSession; E, active, for endSession.
b, b_presenter = session("schemathesis B")
e, e_presenter = session("schemathesis E")
call("POST", f"/v1/sessions/{e['sessionId']}/start", token=e_presenter)

# Session P, active, with a participant, is where createPoll adds polls,
# which later calls (the stateful phase) open, vote on, close and read.
p, p_presenter = session("schemathesis P")
p_id = p["sessionId"]
call("POST", f"/v1/sessions/{p_id}/start", token=p_presenter)
p_participant = call("POST", f"/v1/sessions/{p_id}/participants", {})

# Session D, active, has draft polls for activatePoll and closePoll.
d, d_presenter = session("schemathesis D")
call("POST", f"/v1/sessions/{d['sessionId']}/start", token=d_presenter)
d_polls = [poll(d["sessionId"], d_presenter, question=f"D{i}?", pollType="open_text")["pollId"]
           for i in range(3)]


# Two streams of the generic token, present on two topics each, for the
# connection and presence endpoints; read without pause, so that they never
# fall behind and get closed.
def open_stream(topics):
    url = urllib.parse.urlsplit(base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    query = urllib.parse.urlencode([("topic", topic) for topic in topics] + [("presence", "true")])
    connection.request("GET", f"/v1/events?{query}",
                       headers={"Authorization": f"Bearer {generic_token}"})
    response = connection.getresponse()
    if response.status != 200:
        sys.exit(f"fixtures: stream {topics}: {response.status} {response.read()!r}")
    while True:
        line = response.readline()
        if not line:
            sys.exit(f"fixtures: stream {topics} closed before its first frame")
        if line.startswith(b"data:"):
            connection_id = json.loads(line[5:])["payload"]["connectionId"]
            break
    connection.sock.settimeout(None)
    threading.Thread(target=drain, args=(response,), daemon=True).start()
    return connection_id


def drain(response):
    while response.readline():
        pass


stream_topics = ["schemathesis:lobby", "schemathesis:room", "schemathesis:stage"]
connections = [open_stream(stream_topics[:2]), open_stream(stream_topics[1:])]

# Who may do what, for scripts/lib/schemathesis_tokens.py: the admin key,
# the tokens of the sessions above, and per operation the token for ids
# that name none of them. A's presenter is left out, so that no generated
# command (with ids schemathesis saw in answers) ends A or closes its open
# poll: the votes need them (listVotes still gets it, as its fallback). P
# is never ended ("keep"): createPoll needs it active.
participant_token = participant["participantToken"]
tokens = {
    "admin_key": admin_key,
    "generic": generic_token,
    "presenters": {b["sessionId"]: b_presenter, e["sessionId"]: e_presenter,
                   d["sessionId"]: d_presenter, p_id: p_presenter},
    "participants": {a_id: participant_token, p_id: p_participant["participantToken"]},
    "keep": [p_id],
    "polls": {poll_id: d["sessionId"] for poll_id in d_polls}
    | {a_choice["pollId"]: a_id, a_rating["pollId"]: a_id},
    "fallback": {
        "startSession": b_presenter, "endSession": e_presenter, "createPoll": p_presenter,
        "activatePoll": d_presenter, "closePoll": d_presenter, "listVotes": a_presenter,
        "submitVote": participant_token, "getPollResults": participant_token,
        "streamSession": participant_token,
        "revealPollResults": d_presenter, "hidePollAnswer": d_presenter,
        "invitePresenter": b_presenter, "exportSessionJson": b_presenter,
        "exportSessionCsv": b_presenter,
    },
}

dictionaries = {
    "session_a": [a_id],
    "session_p": [p_id],
    "session_b": [b["sessionId"]],
    "session_e": [e["sessionId"]],
    "session_keys": [a_id, a["slug"], a["slug"].upper(), b["sessionId"]],
    "vote_polls": [a_rating["pollId"], a_choice["pollId"]],
    "participants": [participant["participantId"]],
    "lifecycle_polls": d_polls,
    "connections": connections,
    "stream_topics": stream_topics,
    # Text with NUL (U+0000), which a Postgres text column cannot hold
    # while the in-memory store can; the polling text fields get it often.
    "nul_text": ["\u0000", "a\u0000b", "ends with NUL\u0000"],
}


def toml(value):
    return json.dumps(value)  # JSON strings, numbers and arrays are TOML too


def operation(operation_id, fixed=None, stream=False, text=(), **bindings):
    """One operation's settings: parameters pinned to a value, parameters
    bound to a dictionary (`body__pollId` is `body.pollId`), whose values
    replace generated ones in 90% of the generated requests, and `text`,
    (body field, dictionary) pairs of text fields whose values replace
    generated ones in 10% (each item of an array: `options[*]`)."""
    lines = ["[[operations]]", f"include-operation-id = {toml(operation_id)}"]
    if stream:
        lines.append("max-stream-events = 1")
    entries = [f"{toml(key)} = {toml(value)}" for key, value in (fixed or {}).items()]
    entries += [
        f'{toml(key.replace("__", "."))} = {{ dictionary = {toml(name)}, probability = 0.9 }}'
        for key, name in bindings.items()
    ]
    entries += [
        f'{toml("body." + field)} = {{ dictionary = {toml(name)}, probability = 0.1 }}'
        for field, name in text
    ]
    if entries:
        lines.append(f"parameters = {{ {', '.join(entries)} }}")
    return "\n".join(lines) + "\n"


config = [
    "[generation]",
    f"max-examples = {int(max_examples)}",
    'database = "none"',
    "",
    # Every run starts afresh, no failure replayed from an earlier one:
    # the seed is what reproduces a run.
    "[cache]",
    "enabled = false",
    "",
    # Scenarios of at most 6 calls (the default: session, poll, vote,
    # results...); only the links written in openapi.yaml, none inferred,
    # so that every chain is one the document describes.
    "[phases.stateful]",
    "max-steps = 6",
    "inference.algorithms = []",
    "",
    "[phases.stateful.generation]",
    f"max-examples = {int(scenarios)}",
    "",
    # Any 4xx counts as refusing a request that breaks the schema.
    "[checks.negative_data_rejection]",
    'expected-statuses = ["4XX"]',
    "",
]
for name, values in dictionaries.items():
    config += [f"[dictionaries.{name}]", f"values = {toml(values)}", ""]
NUL = "nul_text"
config += [
    operation("createSession", text=[("title", NUL)]),
    operation("listEvents", fixed={"query.wait": "0"}),
    operation("streamEvents", stream=True),
    operation("adminTail", stream=True),
    operation("joinTopic", path__connectionId="connections"),
    operation("leaveTopic", path__connectionId="connections", path__topic="stream_topics"),
    operation("getPresence", path__topic="stream_topics"),
    operation("presenceHeartbeat", body__connectionId="connections"),
    operation("streamSession", stream=True, path__sessionId="session_a"),
    operation("getSession", path__sessionIdOrSlug="session_keys"),
    operation("joinSession", path__sessionIdOrSlug="session_keys", text=[("displayName", NUL)]),
    operation("startSession", path__sessionId="session_b"),
    operation("endSession", path__sessionId="session_e"),
    operation("createPoll", path__sessionId="session_p",
              text=[("question", NUL), ("options[*]", NUL)]),
    operation("activatePoll", path__pollId="lifecycle_polls"),
    operation("closePoll", path__pollId="lifecycle_polls"),
    operation("submitVote", path__pollId="vote_polls",
              body__pollId="vote_polls", body__participantId="participants",
              text=[("voteData.textResponse", NUL)]),
    operation("getPollResults", path__pollId="vote_polls"),
    operation("listVotes", path__pollId="vote_polls"),
]
with open(os.path.join(out, "schemathesis.toml"), "w") as f:
    f.write("\n".join(config))
with open(os.path.join(out, "tokens.json"), "w") as f:
    json.dump(tokens, f)
open(os.path.join(out, "ready"), "w").close()
while True:
    time.sleep(3600)
PY
)

status=0

# run_store NAME DATABASE_URL ARGS...: schemathesis, with ARGS, against a
# fresh server on that store (in memory when the URL is empty). A failure
# found by schemathesis is recorded in `status`; one of the set-up stops
# the script.
run_store() {
    local store=$1 url=$2 dir="$run_dir/$1"
    shift 2
    mkdir -p "$dir"
    local secret admin_key
    secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    admin_key="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

    # Port 0: the kernel picks a free port, and the server logs the address.
    # A generous vote rate, so that votes reach their checks instead of 429.
    local store_args=()
    [[ -n "$url" ]] && store_args=(--database-url "$url")
    env -u DATABASE_URL RUST_LOG=info "$bin" \
        --listen 127.0.0.1:0 \
        "${store_args[@]}" \
        --token-secret "$secret" \
        --admin-key "$admin_key" \
        --vote-rate 100000 \
        >"$dir/server.log" 2>&1 &
    server_pid=$!

    local base= addr
    for _ in $(seq 150); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            tail -n 20 "$dir/server.log" >&2
            echo "schemathesis: the server exited at start ($store store)" >&2
            exit 1
        fi
        addr="$(grep -m1 'pollcast listening' "$dir/server.log" | grep -oE '127\.0\.0\.1:[0-9]+' || true)"
        if [[ -n "$addr" ]] && curl -fsS -o /dev/null "http://$addr/readyz" 2>/dev/null; then
            base="http://$addr"
            break
        fi
        sleep 0.1
    done
    [[ -n "$base" ]] || { echo "schemathesis: the server did not become ready in 15 s (log: $dir/server.log)" >&2; exit 1; }

    "$venv/bin/python" - "$base" "$admin_key" "$(generic_token "$secret")" \
        "$max_examples" "$scenarios" "$dir" <<<"$fixtures_program" 2>"$dir/fixtures.log" &
    fixtures_pid=$!
    until [[ -f "$dir/ready" ]]; do
        if ! kill -0 "$fixtures_pid" 2>/dev/null; then
            cat "$dir/fixtures.log" >&2
            echo "schemathesis: the fixtures failed ($store store)" >&2
            exit 1
        fi
        sleep 0.1
    done

    echo "schemathesis: $store store on $base, ${max_time} s, seed $seed"
    # Reports asked for with --report land in the store's directory.
    cd "$dir"
    SCHEMATHESIS_HOOKS="$repo_root/scripts/lib/schemathesis_tokens.py" \
    POLLCAST_SCHEMATHESIS_TOKENS="$dir/tokens.json" \
        run "$venv/bin/schemathesis" --config-file "$dir/schemathesis.toml" run "$spec" \
        --url "$base" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,ignored_auth,unsupported_method,ensure_resource_availability \
        --phases examples,coverage,fuzzing,stateful \
        --workers 1 \
        --mode all \
        --seed "$seed" \
        --max-time "$max_time" \
        --request-timeout 10 \
        "$@" \
        || status=1

    stop_store
    # A panic in a handler may still have been answered; the log tells.
    if grep -q 'panicked' "$dir/server.log"; then
        grep -m5 -A3 'panicked' "$dir/server.log" >&2
        echo "schemathesis: the server panicked ($store store, log: $dir/server.log)" >&2
        status=1
    fi
}

for store in $stores; do
    case "$store" in
        memory)
            run_store memory "" "$@"
            ;;
        postgres)
            psql "$pg_admin" -Atqc "CREATE DATABASE $database" >/dev/null
            database_made=1
            run_store postgres "${pg_admin%/*}/$database" "$@"
            cleanup
            ;;
    esac
done
exit "$status"
