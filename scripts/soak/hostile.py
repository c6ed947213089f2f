"""Hostile clients that hold connections, each kind a fixed number at once,
and whether the server cut each one off by its deadline."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time

from .client import NODES, Node, Stream, bearer, close_writer, frame_payload, is_event, jwt, open_stream, \
    parse_response, request_bytes
from .cluster import Run
from .config import CFG
from .records import CHECKS, HOSTILE, TALLY

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN-WAIT-1", 5: "FIN-WAIT-2",
              6: "TIME-WAIT", 7: "CLOSE", 8: "CLOSE-WAIT", 9: "LAST-ACK", 11: "CLOSING"}


@dataclasses.dataclass
class Held:
    kind: str
    node: str
    opened_at: float
    seconds: float = 0.0             # from the connect to the end of the hold
    ended: str = ""                  # server-closed, server-reset, held-to-cap, open-at-stop, connect-failed
    response: str = ""               # status code of the first response the server sent, if any
    received: int = 0
    data: bytes = b""                # the first 4 KiB received
    first_at: float | None = None    # seconds from the connect to the first byte received
    queued_kib: int | None = None    # stalled-reader: what the server's kernel still held to send
    verdict: str = "-"               # ok, FAIL, or - (not judged: no deadline, or let go before it)
    detail: str = ""                 # what failed
    after: list = dataclasses.field(default_factory=list)   # expiring-token: frames after connection:closing

    def closed_by_server(self) -> bool:
        return self.ended.startswith(("server-", "error"))


HELD: list[Held] = []


class HeldConnections:
    """Keeps `count` connections of one hostile kind open at once; each is
    held until the server ends it or for CFG.hold seconds, then replaced.
    Subclasses say what to send first (`opening`), may drip more, and say
    by when the server must have ended the connection (`judge`)."""

    kind = "?"
    what = ""
    check = None         # the name of its check in CHECKS, when it has a deadline

    def __init__(self, run: Run, count: int, token: str):
        self.run, self.count, self.token = run, count, token

    @classmethod
    def deadline(cls) -> str:
        return "-"

    async def run_forever(self):
        await asyncio.gather(*(self.worker(i) for i in range(self.count)))

    async def worker(self, index: int):
        turn = index
        while not self.run.load_stopped.is_set():
            node = NODES[turn % len(NODES)]
            turn += 1
            record = Held(self.kind, node.name, round(self.run.elapsed(), 1))
            HELD.append(record)
            await self.hold(node, record)
            TALLY.add(self.kind, HOSTILE, record.ended + (f" {record.response}" if record.response else ""))
            if record.response.isdigit():
                TALLY.add(f"{self.kind} (answer)", HOSTILE, int(record.response), record.data[:300])
            if self.check and not record.ended.startswith("connect-failed"):
                problems = self.judge(record)
                if problems is not None:
                    record.verdict = "FAIL" if problems else "ok"
                    record.detail = "; ".join(problems)
                    CHECKS.check(self.check, problems, seconds=self.measure(record),
                                 context=f"{self.kind} on {record.node} opened at t={record.opened_at:.0f}s")
            await self.run.sleep(1.0)

    def measure(self, record: Held) -> float | None:
        """When the server acted, in seconds from the deadline's start."""
        return record.seconds if record.closed_by_server() else None

    def judge(self, record: Held) -> list[str] | None:
        """What is wrong with how the server treated it; None when it cannot
        be judged (the client let go before the deadline)."""
        return None

    def must_close_within(self, record: Held, since: float, limit: float) -> list[str] | None:
        """The server closed it within `limit` s of `since` (s after the
        connect), without a 5xx."""
        problems = [f"answered {record.response}"] if record.response[:1] == "5" else []
        if record.closed_by_server():
            if record.seconds - since > limit:
                problems.append(f"closed {record.seconds - since:.1f} s after (limit {limit:.0f} s)")
            return problems
        if record.ended == "open-at-stop" and record.seconds - since <= limit:
            return None
        return problems + [f"still open {record.seconds - since:.0f} s after (limit {limit:.0f} s): {record.ended}"]

    def opening(self, node: Node) -> bytes:
        return b""

    async def drip(self, writer):
        """Sends more while the connection is held (default: nothing)."""
        await asyncio.Event().wait()

    async def hold(self, node: Node, record: Held):
        started = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", node.port), 10)
        except (OSError, TimeoutError) as error:
            record.ended = f"connect-failed ({type(error).__name__})"
            return
        dripping = None
        try:
            writer.write(self.opening(node))
            await writer.drain()
            dripping = asyncio.create_task(self.drip(writer))
            record.ended = await self.watch(reader, record, started)
        except (OSError, asyncio.IncompleteReadError) as error:
            record.ended = "server-reset" if isinstance(error, ConnectionResetError) else f"error ({type(error).__name__})"
        finally:
            if dripping:
                dripping.cancel()
            record.seconds = round(time.monotonic() - started, 2)
            close_writer(writer)

    async def watch(self, reader, record: Held, started: float) -> str:
        """Reads whatever the server sends until it closes, the hold cap
        passes, or the load stops."""
        stopped = asyncio.create_task(self.run.load_stopped.wait())
        try:
            while True:
                remaining = CFG.hold - (time.monotonic() - started)
                if remaining <= 0:
                    return "held-to-cap"
                read = asyncio.create_task(reader.read(65536))
                done, _ = await asyncio.wait({read, stopped}, timeout=remaining,
                                             return_when=asyncio.FIRST_COMPLETED)
                if read not in done:
                    read.cancel()
                    return "open-at-stop" if stopped in done else "held-to-cap"
                data = read.result()
                if not data:
                    return "server-closed"
                if record.first_at is None:
                    record.first_at = round(time.monotonic() - started, 2)
                if len(record.data) < 4096:
                    record.data += data[:4096 - len(record.data)]
                if not record.response and record.data.startswith(b"HTTP/"):
                    record.response = record.data.split(b"\r\n", 1)[0].decode("latin-1")[9:12]
                record.received += len(data)
        finally:
            stopped.cancel()


class Slowloris(HeldConnections):
    kind = "slowloris"
    what = "`GET /healthz HTTP/1.1\\r\\n`, then nothing"
    check = "deadline:slowloris"

    @classmethod
    def deadline(cls):
        return f"head-timeout {CFG.head_timeout_s} s"

    def opening(self, node):
        return b"GET /healthz HTTP/1.1\r\n"

    def judge(self, record):
        return self.must_close_within(record, 0.0, CFG.head_timeout_s + CFG.slack)


class SlowlorisDrip(Slowloris):
    """One more header byte every 5 s: defeats a per-read timeout, not a
    deadline for the whole head (which starts with the opening bytes, sent
    at the connect)."""
    kind = "slowloris-drip"
    what = "the same, then one header byte every 5 s"
    check = "deadline:slowloris-drip"

    async def drip(self, writer):
        for byte in cycle(b"X-Drip: a\r\n"):
            await asyncio.sleep(5)
            writer.write(bytes([byte]))
            await writer.drain()


def cycle(data: bytes):
    while True:
        yield from data


class Silent(Slowloris):
    kind = "silent"
    what = "connects, sends nothing"
    check = "deadline:silent"

    def opening(self, node):
        return b""


class IdleKeepAlive(HeldConnections):
    """One complete request, its answer, then an idle kept-alive connection."""
    kind = "idle-keepalive"
    what = "one GET /healthz answered, then idle on the kept-alive connection"
    check = "deadline:idle-keepalive"

    @classmethod
    def deadline(cls):
        return f"idle-timeout {CFG.idle_timeout_s} s after the answer"

    def opening(self, node):
        return request_bytes(node, "GET", "/healthz", {}, None)

    def measure(self, record):
        return record.seconds - record.first_at if record.closed_by_server() and record.first_at else None

    def judge(self, record):
        if record.first_at is None:
            if record.ended == "open-at-stop":
                return None
            return [f"GET /healthz not answered ({record.ended} after {record.seconds:.1f} s)"]
        closing = self.must_close_within(record, record.first_at, CFG.idle_timeout_s + CFG.slack)
        if closing is None:
            return None
        answer = [] if record.response == "200" else [f"GET /healthz answered {record.response or 'garbage'}"]
        return answer + closing


class StalledBody(HeldConnections):
    """A publish that declares 200 bytes of body and sends 20."""
    kind = "stalled-body"
    what = "POST declaring 200 bytes of body, sends 20"
    check = "deadline:stalled-body"

    @classmethod
    def deadline(cls):
        return f"408 within body-timeout {CFG.body_timeout_s} s"

    def opening(self, node):
        head = request_bytes(node, "POST", "/v1/topics/hostile:stall/events",
                             {**bearer(self.token), "Content-Type": "application/json",
                              "Content-Length": "200"}, None)
        return head + b'{"type":"soak:tick",'

    def measure(self, record):
        return record.first_at

    def judge(self, record):
        limit = CFG.body_timeout_s + CFG.slack
        if record.first_at is None:
            if record.ended == "open-at-stop" and record.seconds <= limit:
                return None
            return [f"no answer: {record.ended} after {record.seconds:.1f} s (limit {limit:.0f} s)"]
        problems = []
        response = parse_response(record.data)
        if response is None:
            return [f"not an HTTP response: {record.data[:100]!r}"]
        if response.status != 408 or response.error_code() != "request_timeout":
            problems.append(f"answered {response.status} {response.error_code() or response.body[:100]!r}")
        if record.first_at > limit:
            problems.append(f"answered after {record.first_at:.1f} s (limit {limit:.0f} s)")
        if response.headers.get("connection", "").lower() != "close":
            problems.append(f"no Connection: close ({response.headers.get('connection')!r})")
        if record.ended == "open-at-stop" and record.seconds - record.first_at <= CFG.slack:
            pass    # let go too soon after the answer to tell
        elif not record.closed_by_server():
            problems.append(f"not closed after the answer ({record.ended} after {record.seconds:.0f} s)")
        elif record.seconds - record.first_at > CFG.slack:
            problems.append(f"closed {record.seconds - record.first_at:.1f} s after the answer")
        return problems


class ExpiringToken(HeldConnections):
    """A stream whose token expires 20 s after it opens: its last frame must
    be connection:closing (token_expired, reconnect: true, lastEventId)
    within slack of exp, and the stream must end right after it."""
    kind = "expiring-token"
    what = "a stream whose token expires 20 s after it opened"
    check = "token-expiry"
    ttl_s = 20

    @classmethod
    def deadline(cls):
        return f"connection:closing at exp ({cls.ttl_s} s)"

    def measure(self, record):
        return record.first_at      # seconds after exp

    async def hold(self, node: Node, record: Held):
        exp = int(time.time()) + self.ttl_s
        claims = {"sub": "expiring", "exp": exp, "subscribe": ["soak:*"]}
        started = time.monotonic()
        stream = await open_stream(node, "/v1/events?topic=soak:t0", bearer(jwt(claims, self.run.cluster.secret)))
        if not isinstance(stream, Stream):
            record.ended = f"refused {stream.status}"
            record.response = str(stream.status)
            record.data = stream.body[:4096]
            record.seconds = round(time.monotonic() - started, 2)
            return
        record.response = "200"
        try:
            async with asyncio.timeout(self.ttl_s + 3 * CFG.slack + 30):
                async for frame in stream.frames(idle_timeout=2 * CFG.heartbeat_s + 10):
                    if frame.get("event") == "connection:closing":
                        record.first_at = round(time.time() - exp, 2)    # here: seconds after exp
                        record.data = frame.get("data", "").encode()[:4096]
                        how, after, took = await stream.rest(within=CFG.slack)
                        record.ended = {"ended": "server-closed", "broken": "server-reset"}.get(how, "open")
                        record.after = [f.get("event", "data") for f in after if is_event(f)]
                        return
            record.ended = "server-closed"       # ended without the frame
        except TimeoutError:
            record.ended = "held-to-cap"
        except (OSError, asyncio.IncompleteReadError, ValueError) as error:
            record.ended = f"server-reset ({type(error).__name__})"
        finally:
            record.seconds = round(time.monotonic() - started, 2)
            stream.close()

    def judge(self, record):
        if record.response != "200":
            return None if record.response[:1] != "5" else [f"opening answered {record.response}"]
        if record.first_at is None:
            return [f"no connection:closing: the stream {record.ended} after {record.seconds:.1f} s "
                    f"(token expired {record.seconds - self.ttl_s:.0f} s before)"]
        problems = []
        payload = frame_payload({"data": record.data.decode("utf-8", "replace")})
        if payload.get("reason") != "token_expired":
            problems.append(f"reason {payload.get('reason')!r}")
        if payload.get("reconnect") is not True:
            problems.append(f"reconnect {payload.get('reconnect')!r}")
        if not str(payload.get("lastEventId", "")).isdigit():
            problems.append(f"lastEventId {payload.get('lastEventId')!r}")
        if record.first_at > CFG.slack:
            problems.append(f"connection:closing {record.first_at:.1f} s after exp (limit {CFG.slack:.0f} s)")
        if record.after:
            problems.append(f"frames after it: {record.after[:5]}")
        if record.ended != "server-closed":
            problems.append(f"the stream did not end after it ({record.ended})")
        return problems


def server_end(server_port: int, client_port: int):
    """The server's end of a loopback connection, from /proc/net/tcp: its
    TCP state and the bytes its kernel still holds to send, or None when
    the socket is gone."""
    local, remote = f"0100007F:{server_port:04X}", f"0100007F:{client_port:04X}"
    with open("/proc/net/tcp") as table:
        for line in table:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                return TCP_STATES.get(int(fields[3], 16), fields[3]), int(fields[4].split(":")[0], 16)
    return None


class StalledReader(HeldConnections):
    """A stream of soak:* replayed from id 0 that is never read, on a socket
    with a small receive buffer. The server cutting it off cannot be seen by
    reading (that would unstall it), nor from this end's TCP state: the
    server's FIN waits behind megabytes its kernel still holds for us. So
    the server's end of the connection is watched in /proc/net/tcp: cut off
    when it leaves ESTABLISHED (FIN-WAIT-1) or disappears. No deadline: the
    server can only notice once its buffers are full."""
    kind = "stalled-reader"
    what = "GET /v1/events soak:* from id 0, never reads (4 KiB receive buffer)"

    async def hold(self, node: Node, record: Held):
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        started = time.monotonic()
        queued = 0
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", node.port)), 10)
            client_port = sock.getsockname()[1]
            await loop.sock_sendall(sock, request_bytes(
                node, "GET", "/v1/events?topic=soak:*", {**bearer(self.token), "Last-Event-ID": "0"}, None))
            record.ended = "held-to-cap"
            while time.monotonic() - started < CFG.hold:
                end = server_end(node.port, client_port)
                if end is None or end[0] != "ESTABLISHED":
                    record.ended = f"server-closed ({end[0] if end else 'socket gone'})"
                    queued = end[1] if end else queued
                    break
                queued = end[1]
                if not await self.run.sleep(2.0):
                    record.ended = "open-at-stop"
                    break
            record.seconds = round(time.monotonic() - started, 1)
            record.queued_kib = queued // 1024
            with contextlib.suppress(OSError, BlockingIOError):
                first = sock.recv(64, socket.MSG_PEEK)
                record.response = first.split(b"\r\n", 1)[0].decode("latin-1")[9:12]
        except (OSError, TimeoutError) as error:
            record.ended = f"error ({type(error).__name__})"
            record.seconds = round(time.monotonic() - started, 1)
        finally:
            sock.close()


HELD_KINDS = {k.kind: k for k in (Slowloris, SlowlorisDrip, IdleKeepAlive, Silent, StalledBody, StalledReader,
                                  ExpiringToken)}
