"""The end of the run: let the consumers catch up, compare what was
acknowledged and delivered with Postgres, scan the node logs, and sort
everything into failures and findings."""

from __future__ import annotations

import asyncio
import collections
import json
import re
import time

from .client import NODES
from .cluster import Cluster, Run, psql
from .config import CFG, selector_matches
from .hostile import HELD
from .records import CHECKS, DEFECTS, HOSTILE, LEDGER, LEGIT, OVERLOAD, TALLY
from .sessions import SESSION_WATCHERS


async def drain(run: Run, readers: list, cluster: Cluster, timeout=60.0) -> float:
    """After the load stops: tell each consumer the last stored id of its
    topics and wait until it has it (or the timeout)."""
    rows = await asyncio.to_thread(psql, cluster.db, "SELECT id, topic FROM events ORDER BY id")
    events = [(int(i), t) for i, t in rows]
    for reader in readers:
        ids = [i for i, t in events if any(selector_matches(s, t) for s in reader.selectors)
               and selector_matches("soak:*", t)]
        reader.target = ids[-1] if ids else 0
    started = time.monotonic()
    while time.monotonic() - started < timeout and not all(r.caught_up() for r in readers):
        await asyncio.sleep(0.5)
    return time.monotonic() - started


def verify(cluster: Cluster, consumers: list) -> dict:
    """Acknowledged versus stored, table by table, and what each consumer
    received versus what is stored on its topics."""
    db = cluster.db
    # The payload is read as text and parsed here, so that one stored
    # payload the server should have refused cannot fail the whole query.
    stored_events = {}
    for row in psql(db, "SELECT id, topic, payload::text FROM events WHERE topic NOT LIKE 'session:%' "
                        "AND topic NOT LIKE 'participant:%' AND topic NOT LIKE 'system%' ORDER BY id"):
        event_id, topic, payload = row[0], row[1], "\t".join(row[2:])
        try:
            key = json.loads(payload).get("k") if payload.startswith("{") else None
        except ValueError:
            key = None
        stored_events[int(event_id)] = (topic, key)
    checks = []

    def compare(name, acked: set, stored: set, unknown: int, explained=None, detail=None):
        missing = acked - stored
        extra = stored - acked
        ok = not missing and (len(extra) <= unknown if explained is None else explained(extra))
        checks.append(dict(name=name, acked=len(acked), stored=len(stored), missing=len(missing),
                           extra=len(extra), unknown=unknown, ok=ok,
                           missing_sample=sorted(map(str, missing))[:5],
                           extra_sample=detail(extra) if detail else sorted(map(str, extra))[:5]))

    # A stored event nobody acknowledged is explained only by a request of
    # unknown outcome that carried the same payload key.
    compare("events (generic topics)", set(LEDGER.events), set(stored_events), LEDGER.unknown["events"],
            explained=lambda extra: all(stored_events[i][1] in LEDGER.unknown_event_keys for i in extra),
            detail=lambda extra: [f"{i} {stored_events[i][0]} k={stored_events[i][1]}" for i in sorted(extra)[:5]])
    for table, acked in (("sessions", LEDGER.sessions), ("polls", LEDGER.polls),
                         ("participants", LEDGER.participants), ("votes", LEDGER.votes)):
        stored = {r[0] for r in psql(db, f"SELECT id FROM {table}")}
        compare(table, acked, stored, LEDGER.unknown[table])
    # Keys of acknowledged publishes appear once each (idempotent retries included).
    keys = collections.Counter(k for t, k in stored_events.values() if k)
    duplicate_keys = {k: n for k, n in keys.items() if n > 1}

    # Polling rows must agree with each other: counters equal the vote rows.
    counter_mismatch = psql(db, "SELECT p.id, p.vote_count, count(v.id) FROM polls p "
                                "LEFT JOIN votes v ON v.poll_id = p.id GROUP BY p.id, p.vote_count "
                                "HAVING p.vote_count <> count(v.id)")

    deliveries = []
    for consumer in consumers:
        expected = {i for i, (t, _) in stored_events.items()
                    if selector_matches("soak:*", t) and any(selector_matches(s, t) for s in consumer.selectors)}
        lost = expected - consumer.seen
        unexpected = consumer.seen - expected
        deliveries.append(dict(name=consumer.name, selectors=" ".join(consumer.selectors),
                               expected=len(expected), received=len(consumer.seen), lost=len(lost),
                               unexpected=len(unexpected), duplicates=consumer.duplicates,
                               out_of_order=consumer.out_of_order, foreign=consumer.foreign,
                               resets=consumer.resets, lost_sample=sorted(lost)[:5],
                               connects=sum(consumer.connects.values()), ends=dict(consumer.ends),
                               first=dict(consumer.first_frames), longest_wait=consumer.longest_wait_s,
                               tokens=getattr(consumer, "generation", 1),
                               ok=not lost and not unexpected and not consumer.duplicates
                               and not consumer.out_of_order and not consumer.foreign))
    return dict(checks=checks, duplicate_keys=duplicate_keys, counter_mismatch=counter_mismatch,
                deliveries=deliveries)


def scan_logs() -> dict:
    """Panics, ERROR and WARN lines per node, grouped by message."""
    found = {}
    for node in NODES:
        text = node.log_path.read_text(errors="replace")
        lines = text.splitlines()
        grouped = collections.Counter()
        for line in lines:
            if " ERROR " in line or " WARN " in line or "panicked" in line:
                message = re.sub(r"^\S+\s+", "", line)                  # timestamp
                message = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<uuid>", message)
                message = re.sub(r"(?<![A-Za-z0-9_.])(?<!code: )\d+(\.\d+)?(?=ms|µs|s\b|\b)", "N", message)
                grouped[message[:200]] += 1
        found[node.name] = dict(lines=len(lines), size=len(text), panics=text.count("panicked"),
                                grouped=grouped)
    return found


def judge(results: dict, alive: dict, exit_codes: dict, logs: dict, health, crashed: list[str]):
    """Sorts what was seen into failures (the run fails) and findings
    (worth a look, not a failure): returns (problems, findings)."""
    problems = [f"harness client crashed (results incomplete): {text}" for text in crashed]
    findings = []
    for c in results["checks"]:
        if not c["ok"]:
            problems.append(f"{c['name']}: {c['missing']} acknowledged but missing, {c['extra']} stored "
                            f"without acknowledgement ({c['unknown']} outcomes unknown)")
    if results["duplicate_keys"]:
        problems.append(f"{len(results['duplicate_keys'])} publish keys stored more than once")
    if results["counter_mismatch"]:
        problems.append(f"{len(results['counter_mismatch'])} polls whose vote_count differs from their votes")
    for d in results["deliveries"]:
        if not d["ok"]:
            problems.append(f"{d['name']}: lost {d['lost']}, unexpected {d['unexpected']}, duplicates {d['duplicates']}, "
                            f"out of order {d['out_of_order']}, other topics {d['foreign']}")
        if d["resets"]:
            findings.append(f"{d['name']} got connection:reset {d['resets']} times")
    for w in SESSION_WATCHERS:
        if w.duplicates or w.out_of_order:
            problems.append(f"session stream {w.name}: duplicates {w.duplicates}, out of order {w.out_of_order}")
    for defect, n in collections.Counter(DEFECTS).items():
        problems.append(f"{defect} ({n}×)")
    for name, is_alive in alive.items():
        if not is_alive:
            problems.append(f"node {name} died during the run (exit {exit_codes.get(name)})")
    for name, info in logs.items():
        if info["panics"]:
            problems.append(f"node {name} logged {info['panics']} panics")
    # The hardening's promises.
    for name, failures in sorted(CHECKS.failures.items()):
        if failures:
            problems.append(f"{name}: {len(failures)} of {CHECKS.made[name]} failed, e.g. {failures[0]}")
    hostile_5xx = TALLY.fivexx(lambda category, status: category == HOSTILE)
    if hostile_5xx:
        problems.append("hostile input answered 5xx (bad input must get a 4xx): "
                        + ", ".join(f"{kind} → {status} ×{n}" for kind, status, n in hostile_5xx))
    overload_other = TALLY.fivexx(lambda category, status: category == OVERLOAD and status != 503)
    if overload_other:
        problems.append("deliberate overload answered a 5xx other than 503: "
                        + ", ".join(f"{kind} → {status} ×{n}" for kind, status, n in overload_other))
    # Findings.
    overload_503 = TALLY.fivexx(lambda category, status: category == OVERLOAD and status == 503)
    if overload_503:
        findings.append("deliberate overload answered 503: "
                        + ", ".join(f"{kind} ×{n}" for kind, _, n in overload_503))
    legit_5xx = sum(n for _, _, n in TALLY.fivexx(lambda category, status: category == LEGIT))
    if legit_5xx:
        findings.append(f"{legit_5xx} legitimate requests answered 5xx (see 5xx answers)")
    bad_health = [s for s in health.samples if s[2] != 200]
    if bad_health:
        findings.append(f"{len(bad_health)} of {len(health.samples)} /healthz probes failed")
    for record_kind in ("stalled-reader",):
        still = [h for h in HELD if h.kind == record_kind and h.ended in ("held-to-cap", "open-at-stop")
                 and h.seconds >= min(CFG.hold, 30)]
        if still:
            findings.append(f"{record_kind}: the server never cut off {len(still)} of its connections "
                            f"(no deadline: it notices a stalled reader only once its buffers are full)")
    unjudged = [w for w in SESSION_WATCHERS if not w.judged]
    if unjudged:
        findings.append(f"{len(unjudged)} session watchers not judged (the session's end unconfirmed, or "
                        f"nothing to resume from when it ended)")
    legit_timeouts = sum(c.get("timeout", 0) + c.get("conn-error", 0) for k, c in TALLY.counts.items()
                         if TALLY.category[k] == LEGIT)
    if legit_timeouts:
        findings.append(f"{legit_timeouts} legitimate requests got no answer (timeout or broken connection)")
    return problems, findings
