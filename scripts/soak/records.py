"""What happened during the run: request outcomes, acknowledged writes and
the pass/fail checks of the server's promises. Module-level singletons,
filled by the clients and read by verify and report."""

from __future__ import annotations

import collections

# A request kind is legit (any 5xx is a defect), hostile input (a 5xx is a
# failure: bad input must get a 4xx), or deliberate overload (503 may be fair).
LEGIT, HOSTILE, OVERLOAD = "legit", "hostile", "overload"


class Tally:
    """Outcome counts per request kind: an HTTP status, or what went wrong
    before one arrived (timeout, conn-error)."""

    def __init__(self):
        self.counts = collections.defaultdict(collections.Counter)
        self.category = {}
        self.samples = collections.defaultdict(list)   # (kind, status) -> a few bodies

    def add(self, kind: str, category: str, status, body: bytes | str = b""):
        self.counts[kind][status] += 1
        self.category[kind] = category
        if isinstance(status, int) and status >= 500 or status in ("timeout", "conn-error"):
            bucket = self.samples[(kind, status)]
            if len(bucket) < 3:
                text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
                bucket.append(text[:300])

    def fivexx(self, pick) -> list[tuple[str, int, int]]:
        """(kind, status, count) of every 5xx whose (category, status) `pick` accepts."""
        return [(kind, status, n) for kind, counts in sorted(self.counts.items())
                for status, n in counts.items()
                if isinstance(status, int) and status >= 500 and pick(self.category[kind], status)]


class Ledger:
    """Every write the server acknowledged, and how many writes ended with
    an outcome the client cannot know (the row may or may not exist)."""

    def __init__(self):
        self.events = {}            # id -> (topic, key)
        self.sessions, self.polls, self.participants, self.votes = set(), set(), set(), set()
        self.unknown = collections.Counter()    # table -> writes of unknown outcome
        self.unknown_event_keys = set()

    def ack_event(self, body: dict, key: str | None):
        self.events[int(body["id"])] = (body["topic"], key)


# The hardening's promises, each checked many times during the run. A
# failed check fails the run.
CHECK_WHAT = {
    "deadline:slowloris": "a partial head, then nothing: closed within head-timeout + slack of the accept",
    "deadline:slowloris-drip": "a head dripped one byte every 5 s: closed within head-timeout + slack of its first byte",
    "deadline:silent": "a connection that sends nothing: closed within head-timeout + slack",
    "deadline:idle-keepalive": "an idle kept-alive connection: closed within idle-timeout + slack of its last answer",
    "deadline:stalled-body": "a body that stops: 408 request_timeout (error body, Connection: close) within "
                             "body-timeout + slack, then closed",
    "token-expiry": "a stream whose token expires: last frame connection:closing (token_expired, reconnect, "
                    "lastEventId) within slack of exp, then the stream ends",
    "nul-422": "a NUL (\\u0000) in any JSON string or key: 422 (a raw 0 byte, which is not JSON: 400 or 422)",
    "revocation": "a revoked reader's stream, on whichever node: connection:closing (token_revoked) within "
                  "1 s + revoke slack of the 201, then the stream ends",
    "revocation-refused": "the revoked token on every node afterwards: 401 token_revoked",
    "admin-close": "DELETE /v1/admin/connections/{id}: 204, and that stream's last frame is connection:closing "
                   "(closed_by_admin)",
    "unexpected-closing": "a reader's stream never ends with connection:closing nobody asked for",
    "session-end": "a session watcher's last event is session:ended, and its stream ends within slack after it",
    "session-204": "a watcher that saw session:ended reconnects with its Last-Event-ID: 204",
}


class Checks:
    """Counts of each check made, the failures with what was seen, and
    measured delays (seconds) per check."""

    def __init__(self):
        self.made = collections.Counter()
        self.failures = collections.defaultdict(list)
        self.measured = collections.defaultdict(list)

    def ok(self, name: str, seconds: float | None = None):
        self.made[name] += 1
        if seconds is not None:
            self.measured[name].append(seconds)

    def fail(self, name: str, detail: str, seconds: float | None = None):
        self.made[name] += 1
        self.failures[name].append(detail)
        if seconds is not None:
            self.measured[name].append(seconds)

    def check(self, name: str, problems: list[str], seconds: float | None = None, context: str = ""):
        """One check: passes when `problems` is empty."""
        if problems:
            self.fail(name, (context + ": " if context else "") + "; ".join(problems), seconds)
        else:
            self.ok(name, seconds)


TALLY = Tally()
LEDGER = Ledger()
CHECKS = Checks()
DEFECTS: list[str] = []   # what must never happen, seen by a client (a forged token let in...)
