"""Legitimate clients on generic topics: publishers, SSE readers, a history
long-poller, a /healthz probe, and an admin who now and then revokes a
reader's token or closes its stream."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import secrets
import time

from .client import (NODES, Response, Stream, bearer, frame_payload, http, is_event, mint, open_stream,
                     read_head, request_bytes, close_writer, retry_after)
from .cluster import Run, first_wait
from .config import CFG, selector_matches
from .records import CHECKS, DEFECTS, LEDGER, LEGIT, TALLY


class Publisher:
    """Publishes to one topic at a steady rate. With idempotency, each event
    carries an Idempotency-Key and a request whose outcome is unknown
    (timeout, broken connection) is retried with it on another node, so the
    ledger stays exact; without, such an outcome is counted as unknown."""

    def __init__(self, run: Run, index: int, token: str, idempotent: bool):
        self.run, self.token, self.idempotent = run, token, idempotent
        self.name = f"pub{index}{'-idem' if idempotent else ''}"
        self.topic = f"soak:t{index % 4}"
        self.sent = 0

    async def run_forever(self):
        seq = 0
        while await self.run.sleep(self.run.rng.uniform(0.5, 1.5) / CFG.publish_per_s):
            seq += 1
            await self.publish(f"{self.name}-{seq}", seq)

    async def publish(self, key: str, seq: int):
        body = {"type": "soak:tick", "payload": {"k": key, "seq": seq, "pad": "x" * self.run.rng.randrange(200)}}
        headers = bearer(self.token)
        if self.idempotent:
            headers["Idempotency-Key"] = key
        for attempt in range(4 if self.idempotent else 1):
            kind = "publish" if attempt == 0 else "publish-retry"
            response = await http(self.run.node(), "POST", f"/v1/topics/{self.topic}/events",
                                  headers=headers, body=body, kind=kind)
            if response.status == 201:
                LEDGER.ack_event(response.json(), key)
                self.sent += 1
                return
            if response.known and response.status not in (429, 503):
                return          # refused: nothing stored (the table check will tell)
            if response.known:
                await asyncio.sleep(retry_after(response))
                if not self.idempotent:
                    return
        if not response.known:
            LEDGER.unknown["events"] += 1
            LEDGER.unknown_event_keys.add(key)


class Consumer:
    """Common bookkeeping of everything that receives stored events: each id
    once, in increasing order."""

    def __init__(self, name: str, selectors: list[str]):
        self.name, self.selectors = name, selectors
        self.seen = set()
        self.last = 0
        self.duplicates = self.out_of_order = self.foreign = self.resets = 0
        self.connects = collections.Counter()
        self.ends = collections.Counter()
        self.first_frames = collections.Counter()
        self.longest_wait_s = 0.0

    def take(self, event_id: int, topic: str | None):
        if event_id in self.seen:
            self.duplicates += 1
        elif event_id < self.last:
            self.out_of_order += 1
        if topic is not None and not any(selector_matches(s, topic) for s in self.selectors):
            self.foreign += 1
        self.seen.add(event_id)
        self.last = max(self.last, event_id)


@dataclasses.dataclass
class Expected:
    """An end of a reader's stream that an admin asked for."""
    reason: str
    future: asyncio.Future


class SseReader(Consumer):
    """A generic-topic subscriber that hangs up every 20-90 s and resumes on
    a random node with Last-Event-ID (header, query parameter, or
    access_token in the query, as EventSource does), counting what it gets.
    Its token has its own jti (and the reader its own sub): when an admin
    revokes it, the stream's last frame is connection:closing, and the
    reader resumes from that frame's lastEventId with a fresh token."""

    def __init__(self, run: Run, index: int, selectors: list[str], style: str):
        super().__init__(f"sse{index}-{style}", selectors)
        self.run, self.index, self.style = run, index, style
        self.generation = 0
        self.token, self.jti = self.fresh_token()
        self.target = None          # set at the drain: the last stored id of its topics
        self.node = None            # the node holding its open stream
        self.live = False           # its open stream has sent its first frame
        self.connection_id = None
        self.expected: Expected | None = None
        self.revoked_jtis = set()   # jtis an admin revoked (or tried to)
        self.resume_from = None     # a connection:closing's lastEventId, for the next connection
        self.token_ready = asyncio.Event()
        self.token_ready.set()
        self.closings = collections.Counter()

    def fresh_token(self) -> tuple[str, str]:
        self.generation += 1
        jti = f"soak-reader{self.index}-g{self.generation}-{secrets.token_hex(4)}"
        return mint(self.run.cluster.secret, f"reader-{self.index}", subscribe=["soak:*"], jti=jti), jti

    def give_token(self, token: str, jti: str):
        self.token, self.jti = token, jti
        self.token_ready.set()

    def expect(self, reason: str) -> Expected:
        self.expected = Expected(reason, asyncio.get_running_loop().create_future())
        return self.expected

    def caught_up(self) -> bool:
        return self.target is not None and self.last >= self.target

    def path_and_headers(self, token: str | None = None):
        token = token or self.token
        last = self.resume_from if self.resume_from is not None else self.last
        query = "&".join(f"topic={s}" for s in self.selectors)
        headers = {}
        if self.style == "header":
            headers["Last-Event-ID"] = str(last)
            headers.update(bearer(token))
        elif self.style == "query":
            query += f"&lastEventId={last}"
            headers.update(bearer(token))
        else:   # EventSource: token and id in the query
            query += f"&lastEventId={last}&access_token={token}"
        return f"/v1/events?{query}", headers

    async def wait_for_token(self):
        stop = asyncio.create_task(self.run.readers_stop.wait())
        ready = asyncio.create_task(self.token_ready.wait())
        await asyncio.wait({stop, ready}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        ready.cancel()

    async def run_forever(self):
        while not self.run.readers_stop.is_set() and not self.caught_up():
            if not self.token_ready.is_set():
                await self.wait_for_token()
                continue
            path, headers = self.path_and_headers()
            node = self.run.node()
            stream = await open_stream(node, path, headers)
            TALLY.add("sse-open", LEGIT, stream.status, getattr(stream, "body", b""))
            if not isinstance(stream, Stream):
                if stream.status == 401:
                    await self.refused(stream)
                else:
                    await asyncio.sleep(retry_after(stream) if stream.known else 1.0)
                continue
            self.resume_from = None
            self.connects["ok"] += 1
            self.node = node
            await self.follow(stream)

    async def refused(self, response: Response):
        """A 401 on reconnecting: expected once its jti was revoked (the
        admin hands over a fresh token); otherwise the server refused a valid
        token, and the reader mints itself a new one to go on."""
        if self.jti in self.revoked_jtis:
            self.token_ready.clear()
            return
        DEFECTS.append(f"a reader's valid token was refused: 401 {response.error_code()}")
        self.token, self.jti = await asyncio.to_thread(self.fresh_token)
        await asyncio.sleep(1.0)

    async def follow(self, stream: Stream):
        hang_up_at = time.monotonic() + self.run.rng.uniform(*CFG.reconnect_s)
        first, closed = True, False
        last_bytes = time.monotonic()
        try:
            async for frame in stream.frames(idle_timeout=2 * CFG.heartbeat_s + 10):
                self.longest_wait_s = max(self.longest_wait_s, time.monotonic() - last_bytes)
                last_bytes = time.monotonic()
                event = frame.get("event")
                if first and is_event(frame):
                    self.first_frames[event or "?"] += 1
                    self.connection_id = frame_payload(frame).get("connectionId")
                    self.live = True
                    first = False
                if event == "connection:closing":
                    closed = True
                    await self.closing(stream, frame)
                    return
                if event == "connection:reset":
                    self.resets += 1
                if "id" in frame:
                    data = json.loads(frame.get("data", "{}"))
                    self.take(int(frame["id"]), data.get("topic"))
                if self.caught_up() or self.run.readers_stop.is_set():
                    self.ends["done"] += 1
                    return
                if time.monotonic() > hang_up_at and self.target is None and self.expected is None:
                    self.ends["client-reconnect"] += 1
                    return
            self.ends["server-ended-stream"] += 1
            self.unexplained_end("ended cleanly")
        except TimeoutError:
            self.ends[f"silent-{2 * CFG.heartbeat_s + 10}s"] += 1
            self.unexplained_end("silent")
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            self.ends[f"broken ({type(error).__name__})"] += 1
            self.unexplained_end(f"broken ({type(error).__name__})")
        finally:
            self.live, self.connection_id, self.node = False, None, None
            stream.close()
            if not closed:
                CHECKS.ok("unexpected-closing")     # a stream that ended without one

    def unexplained_end(self, how: str):
        if self.expected and not self.expected.future.done():
            self.expected.future.set_result(dict(frame=None, how=how, at=time.monotonic()))

    async def closing(self, stream: Stream, frame: dict):
        """connection:closing: it must be the last frame, the stream must end
        right after it; the reader resumes from its lastEventId."""
        at = time.monotonic()
        self.live = False
        payload = frame_payload(frame)
        reason = payload.get("reason")
        how, after, took = await stream.rest(within=CFG.slack)
        result = dict(frame=frame, at=at, reason=reason, reconnect=payload.get("reconnect"),
                      last_event_id=payload.get("lastEventId"), how=how, end_s=took,
                      extra=[f.get("event", "data") for f in after if is_event(f)])
        self.closings[reason] += 1
        self.ends[f"closing:{reason}"] += 1
        if str(payload.get("lastEventId", "")).isdigit():
            self.resume_from = int(payload["lastEventId"])
        if self.expected and not self.expected.future.done():
            self.expected.future.set_result(result)
        else:
            CHECKS.fail("unexpected-closing", f"{self.name}: connection:closing nobody asked for: {frame.get('data')}")
            if reason == "token_revoked":
                self.token, self.jti = await asyncio.to_thread(self.fresh_token)
        if reason == "token_revoked" and self.expected:
            self.token_ready.clear()    # the admin hands over a fresh one


class HistoryReader(Consumer):
    """Follows soak:* through /v1/events/history long-polls, page by page."""

    def __init__(self, run: Run, token: str):
        super().__init__("history-longpoll", ["soak:*"])
        self.run, self.token = run, token
        self.target = None

    def caught_up(self) -> bool:
        return self.target is not None and self.last >= self.target

    async def run_forever(self):
        while not self.run.readers_stop.is_set() and not self.caught_up():
            path = f"/v1/events/history?topic=soak:*&after={self.last}&limit=500&wait=10"
            response = await http(self.run.node(), "GET", path, headers=bearer(self.token),
                                  timeout=25, kind="history")
            if response.status != 200:
                await asyncio.sleep(retry_after(response) if response.known else 1.0)
                continue
            for event in response.json() or []:
                self.take(int(event["id"]), event.get("topic"))


class HealthProbe:
    """GET /healthz every second, on a new connection each time, round robin:
    the question is whether a legit client still gets in."""

    def __init__(self, run: Run):
        self.run = run
        self.samples = []       # (elapsed, node, status, ms)

    async def run_forever(self):
        turn = 0
        while await self.run.sleep(1.0):
            node = NODES[turn % len(NODES)]
            turn += 1
            started = time.monotonic()
            status, ms = "conn-error", None
            try:
                async with asyncio.timeout(5):
                    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
                    writer.write(request_bytes(node, "GET", "/healthz", {"Connection": "close"}, None))
                    await writer.drain()
                    status, _ = await read_head(reader)
                    ms = (time.monotonic() - started) * 1000
                    close_writer(writer)
            except TimeoutError:
                status = "timeout"
            except (OSError, asyncio.IncompleteReadError, ValueError):
                pass
            TALLY.add("healthz", LEGIT, status)
            self.samples.append((round(self.run.elapsed(), 1), node.name, status, ms))


class Admin:
    """Every 20-60 s ends one SSE reader's live stream as the admin: mostly
    by revoking its token's jti through a random node (the stream, on
    whichever node, must get connection:closing token_revoked within a
    second; the token is then refused 401 token_revoked on every node; the
    reader gets a fresh token), sometimes by closing its connection by id
    (connection:closing closed_by_admin; the reader goes on with its token)."""

    def __init__(self, run: Run, readers: list[SseReader]):
        self.run, self.readers = run, readers
        self.actions = collections.Counter()

    async def run_forever(self):
        wait = first_wait(CFG.admin_every_s[0])
        while await self.run.sleep(wait):
            wait = self.run.rng.uniform(*CFG.admin_every_s)
            ready = [r for r in self.readers if r.live and r.expected is None and r.token_ready.is_set()]
            if not ready:
                wait = 2.0
                continue
            reader = self.run.rng.choice(ready)
            if reader.connection_id and self.run.rng.random() < 0.25:
                await self.close(reader)
            else:
                await self.revoke(reader)

    async def wait_for_end(self, reader: SseReader, expected: Expected, seconds: float):
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(expected.future), seconds)
        return None

    @staticmethod
    def judge_closing(result, reason: str) -> list[str]:
        if result is None:
            return ["no connection:closing: the stream is still open"]
        if result["frame"] is None:
            return [f"the stream ended ({result['how']}) without connection:closing"]
        problems = []
        if result["reason"] != reason:
            problems.append(f"reason {result['reason']!r}")
        if result["reconnect"] is not False:
            problems.append(f"reconnect {result['reconnect']!r}")
        if not str(result["last_event_id"] or "").isdigit():
            problems.append(f"lastEventId {result['last_event_id']!r}")
        if result["extra"]:
            problems.append(f"frames after it: {result['extra'][:5]}")
        if result["how"] != "ended":
            problems.append(f"the stream did not end after it ({result['how']}, {result['end_s']:.1f} s)")
        return problems

    async def revoke(self, reader: SseReader):
        old_token, jti, held_on = reader.token, reader.jti, reader.node.name if reader.node else "?"
        node = self.run.node()
        context = f"{reader.name} (jti {jti}, stream on {held_on}, revoked through {node.name})"
        reader.revoked_jtis.add(jti)
        expected = reader.expect("token_revoked")
        self.actions["revoke"] += 1
        self.actions["revoke, stream on another node"] += held_on != node.name
        try:
            sent = time.monotonic()
            response = await http(node, "POST", "/v1/admin/revocations", headers=self.run.cluster.admin(),
                                  body={"jti": jti}, kind="admin-revoke")
            acked = time.monotonic()
            if response.status != 201:
                CHECKS.fail("revocation", f"{context}: POST /v1/admin/revocations answered {response.status} "
                                          f"{response.body[:200]!r}")
                if response.known:
                    return      # refused: nothing was revoked
            limit = 1.0 + CFG.revoke_slack
            result = await self.wait_for_end(reader, expected, limit + 10)
            problems = self.judge_closing(result, "token_revoked")
            # Measured from the POST; the limit counts from its 201 (the
            # node answering it closes its own streams before it answers).
            if result and result["at"] - acked > limit:
                problems.append(f"connection:closing {result['at'] - acked:.2f} s after the 201 (limit {limit:.1f} s)")
            CHECKS.check("revocation", problems, seconds=result["at"] - sent if result else None, context=context)
            # The token is refused everywhere (every node has heard by now).
            await asyncio.sleep(max(0.0, acked + 1.0 - time.monotonic()))
            for other in NODES:
                path, headers = reader.path_and_headers(token=old_token)
                refused = await open_stream(other, path, headers)
                TALLY.add("revoked-token-stream", LEGIT, refused.status, getattr(refused, "body", b""))
                if isinstance(refused, Stream):
                    refused.close()
                    problems = ["a stream was opened (200)"]
                elif refused.status != 401 or refused.error_code() != "token_revoked":
                    problems = [f"answered {refused.status} {refused.error_code()}"]
                else:
                    problems = []
                CHECKS.check("revocation-refused", problems, context=f"{context}, reconnecting to {other.name}")
        finally:
            if reader.expected is expected:
                reader.expected = None
            token, new_jti = await asyncio.to_thread(reader.fresh_token)
            reader.give_token(token, new_jti)

    async def close(self, reader: SseReader):
        connection_id, held_on = reader.connection_id, reader.node.name if reader.node else "?"
        node = self.run.node()
        context = f"{reader.name} (connection {connection_id} on {held_on}, closed through {node.name})"
        expected = reader.expect("closed_by_admin")
        self.actions["close"] += 1
        try:
            sent = time.monotonic()
            response = await http(node, "DELETE", f"/v1/admin/connections/{connection_id}",
                                  headers=self.run.cluster.admin(), kind="admin-close")
            if response.status != 204:
                if response.known:
                    CHECKS.fail("admin-close", f"{context}: DELETE answered {response.status} {response.body[:200]!r}")
                    return
            result = await self.wait_for_end(reader, expected, 10 + CFG.slack)
            problems = self.judge_closing(result, "closed_by_admin")
            CHECKS.check("admin-close", problems, seconds=result["at"] - sent if result else None, context=context)
        finally:
            if reader.expected is expected:
                reader.expected = None
