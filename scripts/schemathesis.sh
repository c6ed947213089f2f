#!/usr/bin/env bash
# Hostile input: schemathesis (PyPI) generates valid and invalid requests
# from openapi.yaml, sends them to a live pollcast and checks every answer:
# no 5xx; status code, Content-Type, headers and body as documented for the
# operation; requests that break the schema refused with a 4xx; requests
# without their token refused; other methods answered 405 with Allow.
#
# The server is the release binary on the in-memory store, on a free
# loopback port, with a fresh token secret and admin key; it is stopped when
# this script exits, however it exits. Before the run, a few sessions, polls
# and a participant are created over REST so that the polling operations get
# past 404: their ids are offered to schemathesis as dictionary values (used
# in most fuzzed requests, the rest stay random), and each operation is sent
# with the token it needs (see the configuration written below).
#
# Made finite, because they would not end in time:
# - the two SSE streams (streamEvents, streamSession), endless by design, are
#   read up to their first event (connection:*, or the first replayed one),
#   which is checked against its schema, data included, and then closed;
# - `wait` of listEvents is always 0: a long-poll holds a request for up to
#   30 s (its validation is covered by tests/api).
#
# The run is bounded by the examples per operation (SCHEMATHESIS_MAX_EXAMPLES,
# default 100) and reproducible with its seed (SCHEMATHESIS_SEED, default 1;
# other integers explore other inputs). Arguments go to `schemathesis run`
# (for instance `--report har`). The server log and the configuration used
# stay in target/schemathesis-run.
#
# schemathesis lives in a virtualenv under target/schemathesis, created and
# filled on first use only; later runs reuse it and need no network.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/python-venv.sh
source "$repo_root/scripts/lib/python-venv.sh"
spec="$repo_root/openapi.yaml"
venv="$repo_root/target/schemathesis"
run_dir="$repo_root/target/schemathesis-run"
bin="$repo_root/target/release/pollcast"
# 4.x reads OpenAPI 3.1 without flags; its CLI and configuration file change
# between minor releases, so stay on the one this script was written for.
requirement='schemathesis>=4.32,<4.33'
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
seed="${SCHEMATHESIS_SEED:-1}"

ensure_venv "$venv" "$requirement"

(cd "$repo_root" && "${CARGO:-cargo}" build -q --release --bin pollcast)

rm -rf "$run_dir"
mkdir -p "$run_dir"
secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
admin_key="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"

server_pid=
stop_server() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# Port 0: the kernel picks a free port, and the server logs the address.
# A generous vote rate, so that votes reach their checks instead of 429.
env -u DATABASE_URL RUST_LOG=info "$bin" \
    --listen 127.0.0.1:0 \
    --token-secret "$secret" \
    --admin-key "$admin_key" \
    --vote-rate 100000 \
    >"$run_dir/server.log" 2>&1 &
server_pid=$!

base=
for _ in $(seq 100); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$run_dir/server.log" >&2
        echo "schemathesis: the server exited at start" >&2
        exit 1
    fi
    addr="$(grep -m1 'pollcast listening' "$run_dir/server.log" | grep -oE '127\.0\.0\.1:[0-9]+' || true)"
    if [[ -n "$addr" ]] && curl -fsS -o /dev/null "http://$addr/readyz"; then
        base="http://$addr"
        break
    fi
    sleep 0.1
done
[[ -n "$base" ]] || { echo "schemathesis: the server did not become ready (log: $run_dir/server.log)" >&2; exit 1; }

# A generic token that may publish to and read every topic: one selector
# per topic depth (1 to 8 segments).
selectors=()
pattern='*'
for _ in $(seq 8); do
    selectors+=(--publish "$pattern" --subscribe "$pattern")
    pattern="$pattern:*"
done
generic_token="$("$bin" token --token-secret "$secret" --sub schemathesis "${selectors[@]}")"

# Fixtures over REST, and the schemathesis configuration that uses them.
"$venv/bin/python" - "$base" "$admin_key" "$generic_token" "$max_examples" \
    >"$run_dir/schemathesis.toml" <<'PY'
import json
import sys
import urllib.request

base, admin_key, generic_token, max_examples = sys.argv[1:]


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

# Session D, active, has draft polls for activatePoll and closePoll.
d, d_presenter = session("schemathesis D")
call("POST", f"/v1/sessions/{d['sessionId']}/start", token=d_presenter)
d_polls = [poll(d["sessionId"], d_presenter, question=f"D{i}?", pollType="open_text")["pollId"]
           for i in range(3)]

dictionaries = {
    "session_a": [a_id],
    "session_b": [b["sessionId"]],
    "session_e": [e["sessionId"]],
    "session_keys": [a_id, a["slug"], a["slug"].upper(), b["sessionId"]],
    "vote_polls": [a_rating["pollId"], a_choice["pollId"]],
    "participants": [participant["participantId"]],
    "lifecycle_polls": d_polls,
}


def toml(value):
    return json.dumps(value)  # JSON strings, numbers and arrays are TOML too


def operation(operation_id, token=None, fixed=None, stream=False, **bindings):
    """One operation's settings: its token, parameters pinned to a value,
    and parameters bound to a dictionary (`body__pollId` is `body.pollId`),
    whose values replace generated ones in 90% of the fuzzed requests."""
    lines = ["[[operations]]", f"include-operation-id = {toml(operation_id)}"]
    if token:
        lines.append(f'headers = {{ Authorization = {toml("Bearer " + token)} }}')
    if stream:
        lines.append("max-stream-events = 1")
    entries = [f"{toml(key)} = {toml(value)}" for key, value in (fixed or {}).items()]
    entries += [
        f'{toml(key.replace("__", "."))} = {{ dictionary = {toml(name)}, probability = 0.9 }}'
        for key, name in bindings.items()
    ]
    if entries:
        lines.append(f"parameters = {{ {', '.join(entries)} }}")
    return "\n".join(lines) + "\n"


config = [
    "[generation]",
    f"max-examples = {int(max_examples)}",
    'database = "none"',
    "",
    # Any 4xx counts as refusing a request that breaks the schema.
    "[checks.negative_data_rejection]",
    'expected-statuses = ["4XX"]',
    "",
    # createSession's security scheme: the server's --admin-key.
    "[auth.openapi.adminKey]",
    f"api_key = {toml(admin_key)}",
    "",
]
for name, values in dictionaries.items():
    config += [f"[dictionaries.{name}]", f"values = {toml(values)}", ""]
participant_token = participant["participantToken"]
config += [
    operation("publishEvent", generic_token),
    operation("listEvents", generic_token, fixed={"query.wait": "0"}),
    operation("streamEvents", generic_token, stream=True),
    operation("joinTopic", generic_token),
    operation("leaveTopic", generic_token),
    operation("getPresence", generic_token),
    operation("presenceHeartbeat", generic_token),
    operation("streamSession", participant_token, stream=True, path__sessionId="session_a"),
    operation("getSession", path__sessionIdOrSlug="session_keys"),
    operation("joinSession", path__sessionIdOrSlug="session_keys"),
    operation("startSession", b_presenter, path__sessionId="session_b"),
    operation("endSession", e_presenter, path__sessionId="session_e"),
    operation("createPoll", a_presenter, path__sessionId="session_a"),
    operation("activatePoll", d_presenter, path__pollId="lifecycle_polls"),
    operation("closePoll", d_presenter, path__pollId="lifecycle_polls"),
    operation("submitVote", participant_token, path__pollId="vote_polls",
              body__pollId="vote_polls", body__participantId="participants"),
    operation("getPollResults", participant_token, path__pollId="vote_polls"),
    operation("listVotes", a_presenter, path__pollId="vote_polls"),
]
print("\n".join(config))
PY

echo "schemathesis: $base, seed $seed, at most $max_examples examples per operation"
# Reports asked for with --report land in target/schemathesis-run.
cd "$run_dir"
status=0
"$venv/bin/schemathesis" --config-file "$run_dir/schemathesis.toml" run "$spec" \
    --url "$base" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,ignored_auth,unsupported_method \
    --phases examples,coverage,fuzzing \
    --mode all \
    --seed "$seed" \
    --request-timeout 10 \
    "$@" \
    || status=$?

# A panic in a handler may still have been answered; the log tells.
if grep -q 'panicked' "$run_dir/server.log"; then
    grep -m5 -A3 'panicked' "$run_dir/server.log" >&2
    echo "schemathesis: the server panicked (log: $run_dir/server.log)" >&2
    status=1
fi
exit "$status"
