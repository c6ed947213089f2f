"""Hostile requests made one at a time (garbage, oversized heads and bodies,
bad tokens, NUL characters), reconnect storms and publish floods."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time

from .client import Node, Stream, bearer, close_writer, http, jwt, open_stream, request_bytes
from .cluster import Run, first_wait
from .config import CFG
from .records import CHECKS, DEFECTS, HOSTILE, LEDGER, OVERLOAD, TALLY


async def raw_exchange(node: Node, data: bytes, read_timeout=10.0) -> tuple[str, float]:
    """Sends raw bytes and reads until the server answers or closes:
    returns (status code, or what happened instead, seconds)."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", node.port), 5)
    except (OSError, TimeoutError):
        return "connect-failed", time.monotonic() - started
    try:
        with contextlib.suppress(OSError):      # the server may refuse before we finish
            writer.write(data)
            await asyncio.wait_for(writer.drain(), read_timeout)
        line = await asyncio.wait_for(reader.readline(), read_timeout)
        if not line:
            return "closed-without-response", time.monotonic() - started
        if line.startswith(b"HTTP/"):
            return line[9:12].decode("latin-1"), time.monotonic() - started
        return "non-http-response", time.monotonic() - started
    except TimeoutError:
        return f"no-response-{int(read_timeout)}s", time.monotonic() - started
    except ConnectionResetError:
        return "reset", time.monotonic() - started
    except OSError as error:
        return f"error ({type(error).__name__})", time.monotonic() - started
    finally:
        close_writer(writer)


def status_of(outcome: str):
    return int(outcome) if outcome.isdigit() else outcome


# Where a NUL goes: the request kind nul:<target>. A raw 0 byte inside a
# JSON string is not JSON at all (RFC 8259 §7: control characters must be
# escaped), so that body is malformed: 400 is the contract's answer for
# malformed JSON, and 422 would do too. Every other target is valid JSON
# with a \u0000 in a string or key: 422.
NUL_TARGETS = ["title", "raw-title", "display-name", "question", "option", "text-vote",
               "publish-payload", "publish-type", "payload-key", "payload-nested", "admin-jti"]
NUL_EXPECTED = {"raw-title": (400, 422)}


class OneShots:
    """Hostile requests one at a time, each kind at its own interval."""

    def __init__(self, run: Run, token: str):
        self.run, self.token = run, token
        self.secret = run.cluster.secret
        self.hostile_session = None

    async def run_forever(self):
        await asyncio.gather(*(self.every(kind, seconds) for kind, seconds in CFG.every.items()))

    async def every(self, kind: str, seconds: float):
        attempt = getattr(self, kind.replace("-", "_"))
        while await self.run.sleep(self.run.rng.uniform(0.5, 1.5) * seconds):
            await attempt()

    async def garbage(self):
        junk = bytes(self.run.rng.randrange(256) for _ in range(self.run.rng.randrange(16, 2048)))
        if self.run.rng.random() < 0.5:
            junk += b"\r\n\r\n"
        outcome, _ = await raw_exchange(self.run.node(), junk)
        TALLY.add("garbage", HOSTILE, status_of(outcome))

    async def oversized_head(self):
        node = self.run.node()
        size = self.run.rng.choice([9 * 1024, 70 * 1024, 1024 * 1024])
        head = request_bytes(node, "GET", "/healthz", {"X-Big": "a" * size}, None)
        outcome, _ = await raw_exchange(node, head)
        TALLY.add(f"oversized-head-{size // 1024}KiB", HOSTILE, status_of(outcome))

    async def oversized_body(self):
        node = self.run.node()
        headers = {**bearer(self.token), "Content-Type": "application/json"}
        if self.run.rng.random() < 0.5:
            # Declares 10 MB, sends 70 KiB of it: the answer should not wait for the rest.
            head = request_bytes(node, "POST", "/v1/topics/hostile:big/events",
                                 {**headers, "Content-Length": "10000000"}, None)
            outcome, _ = await raw_exchange(node, head + b'{"type":"soak:big","payload":"' + b"a" * 70_000)
            TALLY.add("oversized-body-declared-10MB", HOSTILE, status_of(outcome))
        else:
            body = json.dumps({"type": "soak:big", "payload": "a" * 70_000}).encode()
            response = await http(node, "POST", "/v1/topics/hostile:big/events", headers=headers,
                                  body=body, kind="oversized-body-70KiB", category=HOSTILE)
            if response.status == 201:
                LEDGER.ack_event(response.json(), None)

    def bad_tokens(self) -> dict:
        now = int(time.time())
        good = {"sub": "bad", "publish": ["soak:*"], "subscribe": ["soak:*"]}
        return {
            "garbage": "not.a.jwt",
            "expired": jwt({**good, "exp": now - 60}, self.secret),
            "forged": jwt({**good, "exp": now + 3600}, "not-the-secret"),
            "alg-none": jwt({**good, "exp": now + 3600}, self.secret, alg="none"),
            "no-exp": jwt(good, self.secret),
            "wrong-scope": jwt({**good, "exp": now + 3600, "publish": ["other:*"], "subscribe": ["other:*"]},
                               self.secret),
            "none": None,
        }

    async def bad_token(self):
        name, token = self.run.rng.choice(list(self.bad_tokens().items()))
        headers = bearer(token) if token else {}
        node = self.run.node()
        target = self.run.rng.choice(["publish", "stream", "history"])
        kind = f"bad-token:{name}:{target}"
        if target == "publish":
            response = await http(node, "POST", "/v1/topics/soak:t0/events", headers=headers,
                                  body={"type": "soak:forged", "payload": {}}, kind=kind, category=HOSTILE)
            if response.status == 201:
                LEDGER.ack_event(response.json(), None)
                DEFECTS.append(f"publish with a {name} token accepted: {response.body[:200]!r}")
        elif target == "history":
            response = await http(node, "GET", "/v1/events/history?topic=soak:*", headers=headers,
                                  kind=kind, category=HOSTILE)
            if response.status == 200:
                DEFECTS.append(f"history read with a {name} token accepted")
        else:
            stream = await open_stream(node, "/v1/events?topic=soak:*", headers)
            TALLY.add(kind, HOSTILE, stream.status, getattr(stream, "body", b""))
            if isinstance(stream, Stream):
                DEFECTS.append(f"stream with a {name} token accepted")
                stream.close()

    async def ensure_hostile_session(self):
        """An active session with an open text poll, the target of NUL
        display names, questions and answers."""
        if self.hostile_session:
            return self.hostile_session
        admin = self.run.cluster.admin()
        created = await http(self.run.node(), "POST", "/v1/sessions", headers=admin,
                             body={"title": "hostile"}, kind="session-create")
        if created.status != 201:
            return None
        session = created.json()
        LEDGER.sessions.add(session["sessionId"])
        presenter = bearer(session["presenterToken"])
        await http(self.run.node(), "POST", f"/v1/sessions/{session['sessionId']}/start",
                   headers=presenter, body={}, kind="session-start")
        poll = await http(self.run.node(), "POST", f"/v1/sessions/{session['sessionId']}/polls",
                          headers=presenter, body={"question": "Say", "pollType": "open_text"}, kind="poll-create")
        if poll.status != 201:
            return None
        LEDGER.polls.add(poll.json()["pollId"])
        await http(self.run.node(), "POST", f"/v1/polls/{poll.json()['pollId']}/activate",
                   headers=presenter, body={}, kind="poll-activate")
        self.hostile_session = (session, presenter, poll.json()["pollId"])
        return self.hostile_session

    async def nul(self):
        """A NUL character where the server stores text (Postgres text and
        jsonb cannot hold it): refused with 422 everywhere, before it can
        reach a write batch."""
        hostile = await self.ensure_hostile_session()
        if not hostile:
            return
        session, presenter, poll_id = hostile
        sid = session["sessionId"]
        admin = self.run.cluster.admin()
        node = self.run.node()
        target = self.run.rng.choice(NUL_TARGETS)
        kind = f"nul:{target}"
        if target == "title":
            response = await http(node, "POST", "/v1/sessions", headers=admin,
                                  body={"title": "a\u0000b"}, kind=kind, category=HOSTILE)
            if response.status == 201:
                LEDGER.sessions.add(response.json()["sessionId"])
        elif target == "raw-title":
            response = await http(node, "POST", "/v1/sessions", headers={**admin, "Content-Type": "application/json"},
                                  body=b'{"title":"a\x00b"}', kind=kind, category=HOSTILE)
            if response.status == 201:
                LEDGER.sessions.add(response.json()["sessionId"])
        elif target == "display-name":
            response = await http(node, "POST", f"/v1/sessions/{session['slug']}/participants",
                                  body={"displayName": "a\u0000b"}, kind=kind, category=HOSTILE)
            if response.status == 201:
                LEDGER.participants.add(response.json()["participantId"])
        elif target in ("question", "option"):
            body = ({"question": "a\u0000b", "pollType": "open_text"} if target == "question" else
                    {"question": "q", "pollType": "multiple_choice", "options": ["x\u0000", "y"]})
            response = await http(node, "POST", f"/v1/sessions/{sid}/polls", headers=presenter,
                                  body=body, kind=kind, category=HOSTILE)
            if response.status == 201:
                LEDGER.polls.add(response.json()["pollId"])
        elif target == "text-vote":
            joined = await http(node, "POST", f"/v1/sessions/{sid}/participants", body={"displayName": "nul"},
                                kind="join")
            if joined.status != 201:
                return
            LEDGER.participants.add(joined.json()["participantId"])
            response = await http(self.run.node(), "POST", f"/v1/polls/{poll_id}/votes",
                                  headers=bearer(joined.json()["participantToken"]),
                                  body={"voteData": {"textResponse": "a\u0000b"}}, kind=kind, category=HOSTILE)
            if response.status == 201:
                LEDGER.votes.add(response.json()["voteId"])
        elif target == "admin-jti":
            response = await http(node, "POST", "/v1/admin/revocations", headers=admin,
                                  body={"jti": "soak-\u0000"}, kind=kind, category=HOSTILE)
        else:
            body = {
                "publish-payload": {"type": "soak:nul", "payload": {"text": "a\u0000b"}},
                "publish-type": {"type": "soak:nul\u0000", "payload": {}},
                "payload-key": {"type": "soak:nul", "payload": {"a\u0000b": 1}},
                "payload-nested": {"type": "soak:nul", "payload": {"list": [1, {"deep": ["ok", "\u0000"]}]}},
            }[target]
            # On soak:nul, so that one let through reaches the readers too.
            response = await http(node, "POST", "/v1/topics/soak:nul/events", headers=bearer(self.token),
                                  body=body, kind=kind, category=HOSTILE)
            if response.status == 201:
                LEDGER.ack_event(response.json(), None)
        if response.known:
            expected = NUL_EXPECTED.get(target, (422,))
            CHECKS.check("nul-422", [] if response.status in expected else
                         [f"answered {response.status} {response.body[:200]!r}"], context=f"{kind} on {node.name}")


class ReconnectStorm:
    """Every storm_every s, storm_size streams at once with Last-Event-ID: 1
    on wildcard selectors (a whole log's replay each), each read up to
    64 KiB or 3 s and dropped, like a crowd of tabs waking up."""

    def __init__(self, run: Run, token: str):
        self.run, self.token = run, token
        self.storms = []        # (elapsed, statuses, seconds to first replayed event)

    async def run_forever(self):
        wait = first_wait(CFG.storm_every)
        while await self.run.sleep(wait):
            wait = CFG.storm_every
            results = await asyncio.gather(*(self.one() for _ in range(CFG.storm_size)))
            self.storms.append((round(self.run.elapsed()), collections.Counter(r[0] for r in results),
                                [r[1] for r in results if r[1] is not None]))

    async def one(self):
        started = time.monotonic()
        stream = await open_stream(self.run.node(), "/v1/events?topic=soak:*&topic=*:*",
                                   {**bearer(self.token), "Last-Event-ID": "1"})
        TALLY.add("storm-stream", OVERLOAD, stream.status, getattr(stream, "body", b""))
        if not isinstance(stream, Stream):
            return stream.status, None
        first_event = None
        received = 0
        try:
            async with asyncio.timeout(3):
                async for frame in stream.frames(idle_timeout=3):
                    received += len(frame.get("data", ""))
                    if "id" in frame and first_event is None:
                        first_event = time.monotonic() - started
                    if received > 65536:
                        break
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            stream.close()
        return 200, first_event


class PublishFlood:
    """Every flood_every s, flood_seconds of publishes at twice the token's
    --publish-rate from four connections: 429s expected, and every 201 must
    be stored like any other."""

    def __init__(self, run: Run, token: str):
        self.run, self.token = run, token

    async def run_forever(self):
        wait = first_wait(CFG.flood_every) + 5     # not at the same moment as the first storm
        while await self.run.sleep(wait):
            wait = CFG.flood_every
            deadline = time.monotonic() + CFG.flood_seconds
            per_worker_gap = 4 / (2 * CFG.publish_rate)
            await asyncio.gather(*(self.worker(deadline, per_worker_gap, w) for w in range(4)))

    async def worker(self, deadline, gap, w):
        seq = 0
        while time.monotonic() < deadline and not self.run.load_stopped.is_set():
            seq += 1
            key = f"flood-{w}-{time.monotonic():.3f}-{seq}"
            response = await http(self.run.node(), "POST", "/v1/topics/flood:x/events",
                                  headers=bearer(self.token),
                                  body={"type": "soak:flood", "payload": {"k": key}},
                                  kind="flood-publish", category=OVERLOAD)
            if response.status == 201:
                LEDGER.ack_event(response.json(), key)
            elif not response.known:
                LEDGER.unknown["events"] += 1
                LEDGER.unknown_event_keys.add(key)
            await asyncio.sleep(gap)
