"""Reading what the proxy checks recorded (tests/clients/lib/proxy.sh):
stamped SSE streams, response heads and publishes, and the checks both
proxies share (heartbeats one by one)."""

import json
from pathlib import Path


class Failed(Exception):
    """A check failed; the message says how."""


def frames(path: Path):
    """SSE frames of a stamped stream: (time the frame was complete,
    fields dict, comments as (time, text))."""
    out, fields, comments = [], {}, []
    for raw in path.read_text().splitlines():
        at, _, line = raw.partition(" ")
        line = line.rstrip("\r")
        if line == "":
            if fields or comments:
                out.append((float(at), fields, comments))
            fields, comments = {}, []
        elif line.startswith(":"):
            comments.append((float(at), line))
        else:
            key, _, value = line.partition(":")
            fields[key] = value[1:] if value.startswith(" ") else value
    return out


def stored(stream):
    """The frames of a stream that carry an id: (time, fields)."""
    return [(at, f) for at, f, _ in stream if "id" in f]


def response_head(path: Path):
    """A `curl -D` file: the status line and the headers, names in lower case."""
    lines = path.read_text().splitlines()
    status = lines[0] if lines else ""
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
    return status, headers


def published(path: Path):
    """Publishes as recorded: (time the POST started, id, envelope)."""
    out = []
    for line in path.read_text().splitlines():
        at, event_id, body = line.split(" ", 2)
        out.append((float(at), event_id, json.loads(body)))
    return out


def heartbeats(stream, ping_ms, through):
    """Checks `: ping` comments came one by one, never more than 1.5
    heartbeats apart; says so."""
    pings = [at for _, _, comments in stream for at, text in comments if text.strip() == ": ping"]
    if len(pings) < 2:
        raise Failed(f"{len(pings)} heartbeat(s) through {through} with --heartbeat {ping_ms:.0f} ms")
    gaps = [(b - a) * 1000 for a, b in zip(pings, pings[1:])]
    if max(gaps) > 1.5 * ping_ms:
        raise Failed(f"heartbeats through {through} {max(gaps):.0f} ms apart (heartbeat {ping_ms:.0f} ms): held back")
    return f"{len(pings)} heartbeats, {min(gaps):.0f}-{max(gaps):.0f} ms apart"
