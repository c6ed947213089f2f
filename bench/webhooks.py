#!/usr/bin/env python3
"""Webhook delivery throughput to one receiver (#19).

One release server on a fresh Postgres database with an admin key, and one
local receiver (this script: Python's threading HTTP server, keep-alive,
answering 204 and checking the order of what it gets). Per run:

1. create a webhook on `bench:*` and disable it (PATCH enabled=false);
2. publish a backlog of N events with `POST /v1/events`, 100 per request;
3. enable it and time until the receiver has all N: events/s delivered,
   one signed POST per event, in order, each committed to the cursor.

Then the same with the receiver slowed by 1 ms per request, to show what
a real receiver's latency does to the rate (delivery is one request at a
time per webhook, so the rate is about 1 / round trip).

Usage: bench/webhooks.py [--events 5000]
Needs: target/release/pollcast (cargo build --release).
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "pollcast"
SECRET = "bench-secret"
ADMIN = "bench-admin-key"
DB = "pollcast_hookbench"


def log(*parts):
    print("[webhook-bench]", *parts, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(sql):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atqc", sql],
                   check=True, capture_output=True)


class Receiver:
    """Counts deliveries and checks that event ids only go up."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ids = []
        self.delay = 0.0
        self.out_of_order = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                event_id = int(json.loads(body)["data"]["id"])
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver.lock:
                    if receiver.ids and event_id <= receiver.ids[-1]:
                        receiver.out_of_order += 1
                    receiver.ids.append(event_id)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def call(base, method, path, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    else:
        headers["X-Admin-Key"] = ADMIN
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        text = answer.read()
        return json.loads(text) if text else None


def run(base, token, receiver, events, delay, label):
    receiver.ids.clear()
    receiver.delay = delay
    hook = call(base, "POST", "/v1/webhooks", {"url": receiver.url, "topics": [f"bench:{label}"]})
    call(base, "PATCH", f"/v1/webhooks/{hook['id']}", {"enabled": False})
    for start in range(0, events, 100):
        batch = [{"topic": f"bench:{label}", "type": "bench:tick", "payload": {"seq": n}}
                 for n in range(start, min(events, start + 100))]
        call(base, "POST", "/v1/events", {"events": batch}, token=token)
    began = time.time()
    call(base, "PATCH", f"/v1/webhooks/{hook['id']}", {"enabled": True})
    while len(receiver.ids) < events and time.time() - began < 600:
        time.sleep(0.01)
    took = time.time() - began
    state = call(base, "GET", f"/v1/webhooks/{hook['id']}")
    call(base, "DELETE", f"/v1/webhooks/{hook['id']}")
    return {
        "receiver_delay_ms": delay * 1000,
        "events": events,
        "delivered": len(receiver.ids),
        "distinct": len(set(receiver.ids)),
        "out_of_order": receiver.out_of_order,
        "seconds": round(took, 2),
        "events_per_s": round(len(receiver.ids) / took),
        "lag_after": state["lag"],
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql(f"CREATE DATABASE {DB}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, POLLCAST_TOKEN_SECRET=SECRET, RUST_LOG="warn")
    server = subprocess.Popen(
        [str(BIN), "--listen", f"127.0.0.1:{port}", "--database-url",
         f"postgres://postgres@127.0.0.1:5432/{DB}", "--publish-rate", "1000000",
         "--admin-key", ADMIN, "--status-interval", "1h"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1)
                break
            except Exception:
                time.sleep(0.2)
        token = subprocess.run([str(BIN), "token", "--token-secret", SECRET, "--publish", "bench:*",
                                "--ttl", "1h"], check=True, text=True, capture_output=True).stdout.strip()
        receiver = Receiver()
        results = [run(base, token, receiver, args.events, 0.0, "fast"),
                   run(base, token, receiver, max(500, args.events // 5), 0.001, "slow")]
        print(json.dumps(results, indent=2))
    finally:
        server.terminate()
        server.wait(10)
        psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


if __name__ == "__main__":
    main()
