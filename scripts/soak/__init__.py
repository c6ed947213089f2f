"""`make soak` (`python3 scripts/soak`): an hour-scale soak test of a
three-node pollcast cluster.

Why: `make test` proves each promise in seconds; a soak shows what only time
and a crowd show. Memory or file descriptors that grow with every hostile
client, a stream that loses an event after its 40th reconnect, a node that
stops answering /healthz while slowloris clients sit on its sockets, an
acknowledged write that never reached the table, a deadline that holds in
a test and slips after an hour.

What it does (stdlib Python only; everything it starts, it stops):
 1. Starts the local Postgres if it is down (scripts/ensure-postgres.sh),
    builds the release binary (cargo is a no-op when it is fresh;
    SOAK_BUILD=0 skips cargo and uses target/release/pollcast as it is),
    copies it to SOAK_OUT (the nodes and `pollcast token` run the copy, so
    a rebuild during the run changes nothing), creates a database with a random name and starts three nodes on free
    loopback ports, sharing it, one random --token-secret and --admin-key,
    with --publish-rate 40 and the connection deadlines passed explicitly
    (--head-timeout 10s, --idle-timeout 75s, --body-timeout 10s: the
    defaults, which the checks below are sized against).
 2. For SOAK_DURATION seconds (default 3600) runs, in parallel and at a
    modest rate (the machine has two cores and also runs Postgres):
    - legitimate clients: publishers on soak:t0..t3 (half with
      Idempotency-Key and retries), SSE readers that reconnect every minute
      or so to a random node with Last-Event-ID, a history long-poller,
      presenters running polling sessions whose participants join and vote,
      session watchers, a /healthz probe every second, and an admin who
      every 20-60 s revokes one SSE reader's token by its jti (each reader
      has its own sub, each token its own jti) or, one time in four, closes
      the reader's stream by its connectionId; the reader resumes from the
      closing frame's lastEventId, with a fresh token after a revocation;
    - hostile clients, each kind bounded: slowloris (partial head, then
      nothing; and one byte every 5 s), idle keep-alive connections,
      connections that send nothing, POSTs whose body never comes, a stream
      that is never read, a stream whose token expires, garbage bytes,
      oversized heads and bodies, invalid/expired/forged tokens, NUL
      characters in JSON strings and keys, Last-Event-ID: 1 reconnect
      storms on wildcard selectors, and publish floods at twice the rate
      limit.
    Every request's outcome is tallied by kind and status; every held
    connection's fate (closed by the server after how long, with what
    answer, or still open) is recorded and judged against its deadline.
    All clients are on 127.0.0.1 and share the per-address caps (1,024
    connections, 1,024 streams per node): the load holds well under a
    hundred connections per node (the report's TCP column shows it), so the
    nodes keep the defaults.
 3. Samples every SOAK_SAMPLE seconds (10) each node's VmRSS, open fds,
    open streams and TCP connections (/metrics), and Postgres' connections.
 4. Stops the load, lets readers catch up, then compares with Postgres:
    every acknowledged publish (event id), session, poll, join and vote must
    be in its table; rows nobody acknowledged must be explained by requests
    whose outcome the client could not know (timeouts). Every SSE and
    history consumer must have received every stored event of its topics
    exactly once, in order, revocations and admin closes included.
 5. Writes target/soak/report.md and raw CSVs beside it, prints the path and
    a one-line verdict.

Exit status: 0 PASS; 2 setup failed; 130 interrupted (the report is still
written); 1 FAIL, which is any of:
 - an acknowledged write missing, unexplained rows, lost/duplicated/
   reordered events, a node that died or panicked, a forged/expired token
   let in, a harness client that crashed;
 - a hostile connection the server did not cut off by its deadline (plus
   SOAK_SLACK, 2 s): a partial head, a connection that sent nothing, and a
   head dripped one byte every 5 s, closed within --head-timeout of the
   accept (the drip's head starts there); an idle kept-alive connection
   closed within --idle-timeout of its last answer; a stalled body answered
   408 request_timeout (the error body, Connection: close) within
   --body-timeout, then closed;
 - a 5xx answering hostile input, or a 5xx other than 503 answering the
   deliberate overload (storms, floods);
 - a stream whose token expired that did not get connection:closing
   (token_expired, reconnect: true, lastEventId) within slack of exp as its
   last frame, then end;
 - a NUL anywhere in a JSON body (\\u0000 in a string or key, publish
   payloads included) answered anything but 422 (a raw 0 byte, which makes
   the body malformed JSON, may get 400);
 - a revoked reader's stream, on whichever node, that did not end with
   connection:closing (token_revoked) within 1 s of the revocation's 201
   (plus SOAK_REVOKE_SLACK, 0.5 s); the revoked token not refused 401
   token_revoked by every node a second later; an admin close without its
   connection:closing (closed_by_admin); any connection:closing nobody
   asked for;
 - a session watcher whose last event was not session:ended, whose stream
   did not end right after it, or whose reconnect then did not get 204.
Findings, reported but not failures: 503s under the deliberate overload,
5xx and unanswered legitimate requests, failed /healthz probes,
connection:reset frames, a stalled reader never cut off (it has no deadline:
the server notices only once its buffers fill).

Ctrl-C once stops the load early and still verifies and reports; twice
stops at once. The nodes die with this script even on SIGKILL (PDEATHSIG);
the database is dropped at the end (SOAK_KEEP_DB=1 keeps it).

Environment: SOAK_DURATION (s, 3600), SOAK_BUILD (1), SOAK_HOLD (s, 300:
the longest a hostile client keeps one connection before it lets go and
opens another; at least the idle timeout plus margin), SOAK_SLACK (s, 2),
SOAK_REVOKE_SLACK (s, 0.5), SOAK_SAMPLE (s, 10), SOAK_REPORT_EVERY (s: rows
of the report's time table, 300, or a sixth of the run when shorter),
SOAK_OUT (target/soak), SOAK_KEEP_DB (0), SOAK_SEED (random), RUST_LOG
(info).

Layout: config (knobs), records (tallies, ledger, checks), client (HTTP,
SSE, tokens), cluster (database, nodes, sampler), legit (publishers,
readers, admin), sessions (presenters, watchers), hostile (held
connections), oneshots (one-shot hostile requests, storms, floods), verify
(drain, compare, judge), report, main.
"""
