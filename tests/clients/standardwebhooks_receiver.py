#!/usr/bin/env python3
"""pollcast's webhooks checked by an implementation nobody here wrote:
the `standardwebhooks` package (PyPI, the Standard Webhooks reference
library) verifies every delivery.

  1. start a receiver on a free loopback port (Python's http.server); it
     verifies each request with `standardwebhooks.Webhook(secret).verify`
     and answers 204, or 401 when verification fails;
  2. create a webhook with the admin key on a topic of its own per run,
     with a secret made here (`whsec_` + base64 of 32 random bytes);
  3. publish N events there (and one elsewhere, not selected);
  4. expect the N events, in order, each verified, each body
     `{"type", "timestamp", "data": <envelope>}` with the envelope the
     publish answered; the webhook's status `active` and lag 0;
  5. check the verifier is not a rubber stamp: a delivery's body altered by
     one byte, or checked with another secret, must fail verification;
  6. rotate the secret (PATCH a new one): the next delivery carries two
     signatures, and the library verifies it with the old secret and with
     the new; after `dropPreviousSecret`, a delivery fails with the old
     secret, and the receiver, switched to the new one, gets it on retry;
  7. delete the webhook.

Any mismatch ends the script with a message and a non-zero exit status.

Configuration (environment): POLLCAST_URL, POLLCAST_ADMIN_KEY,
POLLCAST_TOKEN_SECRET and POLLCAST_BIN (to mint a publisher's token with
`pollcast token`), as scripts/clients.sh sets them.
"""

import base64
import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

EVENTS = 20


class Mismatch(Exception):
    pass


def request(base, method, path, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Deliveries:
    """What the receiver got: (headers, raw body, verified payload or error)."""

    def __init__(self, secret):
        self.webhook = Webhook(secret)
        self.lock = threading.Lock()
        self.seen = []

    def use_secret(self, secret):
        with self.lock:
            self.webhook = Webhook(secret)

    def handler(self):
        deliveries = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {name.lower(): value for name, value in self.headers.items()}
                with deliveries.lock:
                    webhook = deliveries.webhook
                try:
                    payload = webhook.verify(body, headers)
                    status, outcome = 204, payload
                except WebhookVerificationError as error:
                    status, outcome = 401, error
                with deliveries.lock:
                    deliveries.seen.append((headers, body, outcome))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        return Handler

    def verified(self):
        with self.lock:
            return [(h, b, o) for h, b, o in self.seen if not isinstance(o, Exception)]

    def refused(self):
        with self.lock:
            return [o for _, _, o in self.seen if isinstance(o, Exception)]


def wait_for(what, check, seconds=20):
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise Mismatch(f"waited {seconds} s for {what}")
        time.sleep(0.05)


def rotate(base, path, admin, token, topic, deliveries, old_secret):
    """Step 6: a secret rotated without losing a message."""
    new_secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    status, changed = request(base, "PATCH", path, {"secret": new_secret}, admin)
    if status != 200 or not changed.get("previousSecretExpiresAt"):
        raise Mismatch(f"rotating the secret: expected 200 with previousSecretExpiresAt, got {status}: {changed}")
    before = len(deliveries.verified())
    status, event = request(base, "POST", f"/v1/topics/{topic}/events", {"type": "hooks:said", "payload": {}}, token)
    if status != 201:
        raise Mismatch(f"publish after rotating: expected 201, got {status}: {event}")
    wait_for("the delivery after the rotation",
             lambda: any(p["data"]["id"] == event["id"] for _, _, p in deliveries.verified()[before:]))
    headers, body, _ = next(d for d in deliveries.verified()[before:] if d[2]["data"]["id"] == event["id"])
    if len(headers["webhook-signature"].split(" ")) != 2:
        raise Mismatch(f"during the overlap two signatures, got {headers['webhook-signature']!r}")
    for label, secret in [("old", old_secret), ("new", new_secret)]:
        try:
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError as error:
            raise Mismatch(f"during the overlap the {label} secret should verify: {error}")

    status, dropped = request(base, "PATCH", path, {"dropPreviousSecret": True}, admin)
    if status != 200 or dropped.get("previousSecretExpiresAt") is not None:
        raise Mismatch(f"dropping the previous secret: got {status}: {dropped}")
    status, event = request(base, "POST", f"/v1/topics/{topic}/events", {"type": "hooks:said", "payload": {}}, token)
    if status != 201:
        raise Mismatch(f"publish after the drop: expected 201, got {status}: {event}")
    wait_for("a refusal with the old secret", lambda: len(deliveries.refused()) > 0)
    deliveries.use_secret(new_secret)
    wait_for("the delivery with the new secret",
             lambda: any(p["data"]["id"] == event["id"] for _, _, p in deliveries.verified()))


def mint_token(topic):
    command = [os.environ["POLLCAST_BIN"], "token", "--token-secret", os.environ["POLLCAST_TOKEN_SECRET"],
               "--sub", "webhooks", "--publish", topic]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise Mismatch(f"minting a token failed: {result.stderr.strip()}")
    return result.stdout.strip()


def main():
    base = os.environ.get("POLLCAST_URL", "http://127.0.0.1:8080")
    admin = {"X-Admin-Key": os.environ["POLLCAST_ADMIN_KEY"]}
    run = secrets.token_hex(4)
    topic, elsewhere = f"hooks:run-{run}", f"hooks:other-{run}"
    token = {"Authorization": f"Bearer {mint_token('hooks:*')}"}
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()

    deliveries = Deliveries(secret)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), deliveries.handler())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    receiver_url = f"http://127.0.0.1:{server.server_address[1]}/hook"

    status, webhook = request(base, "POST", "/v1/webhooks",
                              {"url": receiver_url, "topics": [topic], "secret": secret,
                               "description": "standardwebhooks check"}, admin)
    if status != 201:
        raise Mismatch(f"creating the webhook: expected 201, got {status}: {webhook}")
    path = f"/v1/webhooks/{webhook['id']}"
    try:
        published = []
        for i in range(EVENTS):
            status, event = request(base, "POST", f"/v1/topics/{topic}/events",
                                    {"type": "hooks:said", "payload": {"i": i}}, token)
            if status != 201:
                raise Mismatch(f"publish {i}: expected 201, got {status}: {event}")
            published.append(event)
        request(base, "POST", f"/v1/topics/{elsewhere}/events", {"type": "hooks:said", "payload": {}}, token)

        deadline = time.monotonic() + 20
        while len(deliveries.verified()) < EVENTS and time.monotonic() < deadline:
            time.sleep(0.05)
        got = deliveries.verified()
        if deliveries.refused():
            raise Mismatch(f"standardwebhooks refused deliveries: {deliveries.refused()[:3]}")
        ids = [payload["data"]["id"] for _, _, payload in got]
        expected_ids = [event["id"] for event in published]
        if ids != expected_ids:
            raise Mismatch(f"expected the events {expected_ids} in order, got {ids}")
        for (headers, _, payload), event in zip(got, published):
            if payload != {"type": event["type"], "timestamp": event["timestamp"], "data": event}:
                raise Mismatch(f"delivery of {event['id']}: body {payload} does not carry the envelope {event}")
        if len({headers["webhook-id"] for headers, _, _ in got}) != EVENTS:
            raise Mismatch("each event should have its own webhook-id")

        # The verifier really checks: one byte off, or another secret, fails.
        headers, body, _ = got[0]
        for label, check in [
            ("an altered body", lambda: Webhook(secret).verify(body.replace(b'"i":0', b'"i":1'), headers)),
            ("another secret", lambda: Webhook("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
             .verify(body, headers)),
        ]:
            try:
                check()
            except WebhookVerificationError:
                continue
            raise Mismatch(f"standardwebhooks accepted {label}")

        rotate(base, path, admin, token, topic, deliveries, secret)

        deadline = time.monotonic() + 10
        while True:
            status, state = request(base, "GET", path, None, admin)
            if status == 200 and state["status"] == "active" and state["lag"] == 0:
                break
            if time.monotonic() > deadline:
                raise Mismatch(f"expected the webhook active with lag 0, got {status}: {state}")
            time.sleep(0.1)
    finally:
        status, _ = request(base, "DELETE", path, None, admin)
        server.shutdown()
    if status != 204:
        raise Mismatch(f"deleting the webhook: expected 204, got {status}")
    print(f"standardwebhooks: {EVENTS} deliveries verified, in order; tampering refused; "
          "a secret rotated with both signatures verified")


if __name__ == "__main__":
    try:
        main()
    except Mismatch as mismatch:
        print(f"standardwebhooks receiver: MISMATCH: {mismatch}", file=sys.stderr)
        sys.exit(1)
