"""A small HTTP/1.1 and SSE client on asyncio streams, and tokens."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import json
import subprocess
import time

from .config import CFG
from .records import LEGIT, TALLY


@dataclasses.dataclass
class Response:
    status: int | str              # an int, or "timeout" / "conn-error"
    headers: dict
    body: bytes
    seconds: float
    error: str = ""

    @property
    def known(self) -> bool:
        return isinstance(self.status, int)

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def error_code(self) -> str | None:
        """The contract's error code of a non-2xx answer, if it has one."""
        body = self.json()
        error = body.get("error") if isinstance(body, dict) else None
        return error.get("code") if isinstance(error, dict) else None


class Node:
    def __init__(self, index: int, proc: subprocess.Popen, port: int, log_path):
        self.index, self.proc, self.port, self.log_path = index, proc, port, log_path
        self.name = f"n{index + 1}"
        self.idle = []              # kept-alive connections: (reader, writer, since)


NODES: list[Node] = []
IDLE_REUSE_S = 2.0   # a pooled connection idle longer is dropped, not reused (servers time idle ones out)


def parse_head(head: bytes) -> tuple[int, dict]:
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_head(reader: asyncio.StreamReader):
    return parse_head(await reader.readuntil(b"\r\n\r\n"))


def parse_response(data: bytes) -> Response | None:
    """A whole response received as raw bytes (a held connection's), or
    None when they are not one. A chunked body is decoded."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/"):
        return None
    try:
        status, headers = parse_head(head)
    except (ValueError, IndexError):
        return None
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            try:
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                break
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2:]
    elif "content-length" in headers:
        body = rest[:int(headers["content-length"])]
    else:
        body = rest
    return Response(status, headers, body, 0.0)


async def iter_body(reader: asyncio.StreamReader, headers: dict):
    """Yields a response body as it arrives: chunked, sized or until EOF.
    Raises asyncio.IncompleteReadError if a chunked body breaks off."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            line = await reader.readline()
            if not line:
                raise asyncio.IncompleteReadError(b"", None)
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass
                return
            chunk = await reader.readexactly(size + 2)
            yield chunk[:-2]
    elif "content-length" in headers:
        remaining = int(headers["content-length"])
        while remaining > 0:
            chunk = await reader.read(min(remaining, 65536))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", remaining)
            remaining -= len(chunk)
            yield chunk
    else:
        while chunk := await reader.read(65536):
            yield chunk


async def read_body(reader: asyncio.StreamReader, status: int, headers: dict, method: str = "GET") -> bytes:
    """A whole response body; none for a HEAD, a 1xx, a 204 or a 304
    (which have no length, and reading to EOF would wait for the idle
    timeout)."""
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return b""
    return b"".join([chunk async for chunk in iter_body(reader, headers)])


def close_writer(writer):
    with contextlib.suppress(Exception):
        writer.transport.abort()


def request_bytes(node: Node, method: str, path: str, headers: dict, body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{node.port}"]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


async def http(node: Node, method: str, path: str, *, headers=None, body=None,
               timeout=10.0, kind=None, category=LEGIT) -> Response:
    """One request on a kept-alive connection to `node` (or a new one);
    tallied under `kind` when given. Never raises for network trouble."""
    headers = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        headers.setdefault("Content-Type", "application/json")
    conn = None
    while node.idle and conn is None:
        reader, writer, since = node.idle.pop()
        if time.monotonic() - since < IDLE_REUSE_S and not reader.at_eof():
            conn = (reader, writer)
        else:
            close_writer(writer)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            if conn is None:
                conn = await asyncio.open_connection("127.0.0.1", node.port, limit=1 << 20)
            reader, writer = conn
            writer.write(request_bytes(node, method, path, headers, body))
            await writer.drain()
            status, response_headers = await read_head(reader)
            data = await read_body(reader, status, response_headers, method)
        response = Response(status, response_headers, data, time.monotonic() - started)
        framed = "content-length" in response_headers or "chunked" in response_headers.get("transfer-encoding", "") \
            or status == 204
        keep = framed and response_headers.get("connection", "").lower() != "close"
        if keep and len(node.idle) < 16:
            node.idle.append((reader, writer, time.monotonic()))
        else:
            close_writer(writer)
    except TimeoutError:
        response = Response("timeout", {}, b"", time.monotonic() - started, "timeout")
        if conn:
            close_writer(conn[1])
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as error:
        response = Response("conn-error", {}, b"", time.monotonic() - started, f"{type(error).__name__}: {error}")
        if conn:
            close_writer(conn[1])
    if kind:
        TALLY.add(kind, category, response.status, response.body or response.error)
    return response


def retry_after(response: Response, default: float = 1.0) -> float:
    try:
        return min(10.0, float(response.headers.get("retry-after", default)))
    except ValueError:
        return default


# --- SSE ---------------------------------------------------------------------

class SseParser:
    """text/event-stream bytes in, frames out ({'id','event','data'}, or
    {'comment'} for a `: ping`, so that a consumer wakes up on heartbeats)."""

    def __init__(self):
        self.partial = b""
        self.fields = {}
        self.comments = 0

    def feed(self, data: bytes) -> list[dict]:
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        frames = []
        for raw in lines:
            line = raw.rstrip(b"\r")
            if not line:
                if self.fields:
                    frames.append(self.fields)
                    self.fields = {}
            elif line.startswith(b":"):
                self.comments += 1
                frames.append({"comment": line[1:].strip().decode("latin-1")})
            else:
                name, _, value = line.partition(b":")
                value = value[1:] if value.startswith(b" ") else value
                text = value.decode("utf-8", "replace")
                key = name.decode("latin-1")
                if key == "data" and "data" in self.fields:
                    self.fields["data"] += "\n" + text
                else:
                    self.fields[key] = text
        return frames


def is_event(frame: dict) -> bool:
    """A frame with an event or data (not a comment, not a bare `retry:`)."""
    return "event" in frame or "data" in frame or "id" in frame


def frame_payload(frame: dict) -> dict:
    """The envelope's payload of a frame, {} when it has none."""
    try:
        data = json.loads(frame.get("data", "{}"))
    except ValueError:
        return {}
    payload = data.get("payload") if isinstance(data, dict) else None
    return payload if isinstance(payload, dict) else {}


class Stream:
    """An open GET that answered: status, headers and, for a 200, frames."""

    def __init__(self, reader, writer, status, headers):
        self.reader, self.writer, self.status, self.headers = reader, writer, status, headers
        self.parser = SseParser()
        self.body = iter_body(reader, headers)

    async def frames(self, idle_timeout: float):
        """Yields frames; ends with StopAsyncIteration on a clean end of the
        chunked body; raises TimeoutError after idle_timeout without bytes."""
        while True:
            try:
                chunk = await asyncio.wait_for(anext(self.body), idle_timeout)
            except StopAsyncIteration:
                return
            for frame in self.parser.feed(chunk):
                yield frame

    async def rest(self, within: float) -> tuple[str, list[dict], float]:
        """Reads what follows a frame that must be the stream's last: returns
        how it ended ('ended' cleanly, 'broken', or 'open' after `within`
        seconds), the frames that came meanwhile, and the seconds it took."""
        started = time.monotonic()
        frames = []
        try:
            async with asyncio.timeout(within):
                async for frame in self.frames(idle_timeout=within):
                    frames.append(frame)
            how = "ended"
        except TimeoutError:
            how = "open"
        except (OSError, asyncio.IncompleteReadError, ValueError):
            how = "broken"
        return how, frames, time.monotonic() - started

    def close(self):
        close_writer(self.writer)


async def open_stream(node: Node, path: str, headers: dict, timeout=10.0) -> Stream | Response:
    """A fresh connection per stream (as a load balancer would open one),
    so pollcast serves it straight on the socket."""
    started = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", node.port, limit=1 << 20)
            writer.write(request_bytes(node, "GET", path, headers, None))
            await writer.drain()
            status, response_headers = await read_head(reader)
            if status == 200:
                return Stream(reader, writer, status, response_headers)
            data = await read_body(reader, status, response_headers)
            close_writer(writer)
            return Response(status, response_headers, data, time.monotonic() - started)
    except TimeoutError:
        status, error = "timeout", "timeout"
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
        status, error = "conn-error", f"{type(e).__name__}: {e}"
    if writer:
        close_writer(writer)
    return Response(status, {}, b"", time.monotonic() - started, error)


# --- tokens ------------------------------------------------------------------

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict, secret: str, alg: str = "HS256") -> str:
    """HS256 as pollcast signs them; used for the hostile tokens (expired,
    forged, alg none) and checked against a real node before the run."""
    header = b64url(json.dumps({"typ": "JWT", "alg": alg}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    if alg == "none":
        return f"{header}.{payload}."
    signature = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(signature)}"


def mint(secret: str, sub: str, publish=(), subscribe=(), ttl_s: int | None = None, jti: str | None = None) -> str:
    """A token from the binary itself, as an operator would mint one."""
    args = [str(CFG.bin), "token", "--token-secret", secret, "--sub", sub,
            "--ttl", f"{ttl_s or CFG.duration + 3600}s"]
    if jti:
        args += ["--jti", jti]
    for selector in publish:
        args += ["--publish", selector]
    for selector in subscribe:
        args += ["--subscribe", selector]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}
