#!/usr/bin/env python3
"""The README's curl walk-throughs, done by a client nobody here wrote:
Python's httpx with httpx-sse (PyPI) reading pollcast's streams.

"Try it with curl", step by step:
  1. get a token as the README says (`make -s token`), or take one;
  2. watch a topic: 200, text/event-stream, no-cache, X-Accel-Buffering: no,
     first frame `retry: 2000` + `connection:established` without an id;
  3. publish two events: each POST is 201 with the stored envelope, and the
     watcher receives each one, in order, as `id: <id>` / `event: <type>` /
     `data: <that envelope>`;
  4. stop watching, publish one more while away, come back with
     `Last-Event-ID: <first id>`: `connection:reconnected` with replayFrom
     and replayCount, then exactly the missed events in order, then live
     events; `?lastEventId=` does the same, and the header wins over it;
  5. read the same events as JSON from the history endpoint, and long-poll
     it: an empty wait returns [] after the wait, a wait that an event ends
     returns that event at once.
"Live polling": a presenter creates a session, a watcher with no token
streams it, a participant joins by code, the presenter starts it, adds a
poll and opens it, the participant votes; the watcher gets every event in
order and the results broadcast without the voter, while the participant's
own stream also gets its unicast confirmation.

Any mismatch ends the script with a message saying what was expected and
what came, and a non-zero exit status.

Configuration (arguments win over the environment):
  --url / POLLCAST_URL                 the server (http://127.0.0.1:8080)
  --token / POLLCAST_TOKEN             a token that may publish and subscribe
                                       to demo:* (else one is minted)
  --token-secret / POLLCAST_TOKEN_SECRET  mint it with `pollcast token` and
                                       this secret (else `make -s token`,
                                       which uses `make run`'s dev secret)
  --bin / POLLCAST_BIN                 the pollcast binary used to mint
  --admin-key / POLLCAST_ADMIN_KEY     if the server has --admin-key
Events go to a topic of its own per run (demo:hello-<random>), so the script
can run again and again against the same server.
"""

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx
from httpx_sse import aconnect_sse

REPO = Path(__file__).resolve().parents[2]
WAIT = 5.0  # seconds to wait for any one expected frame


class Mismatch(Exception):
    pass


checks = 0


def check(condition, message):
    global checks
    if not condition:
        raise Mismatch(message)
    checks += 1


def equal(got, expected, what):
    check(got == expected, f"{what}: expected {expected!r}, got {got!r}")


def step(text):
    print(f"httpx-sse: {text}", flush=True)


class Stream:
    """One open SSE response, its frames pumped into a queue so the script
    can publish meanwhile and then expect frames one by one."""

    def __init__(self, client, path, params=None, headers=None):
        self.client, self.path = client, path
        self.params, self.headers = params or {}, dict(headers or {})

    async def __aenter__(self):
        self._cm = aconnect_sse(self.client, "GET", self.path, params=self.params, headers=self.headers)
        self.source = await self._cm.__aenter__()
        response = self.source.response
        if response.status_code != 200:
            body = (await response.aread()).decode(errors="replace")
            await self._cm.__aexit__(None, None, None)
            raise Mismatch(f"GET {self.path}: expected 200, got {response.status_code}: {body}")
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._pump())
        return self

    async def _pump(self):
        try:
            async for sse in self.source.aiter_sse():
                await self.queue.put(sse)
            await self.queue.put(Mismatch(f"{self.path}: the server ended the stream"))
        except Exception as error:  # noqa: BLE001 - reported to the reader
            await self.queue.put(error)

    async def __aexit__(self, *exc):
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        await self._cm.__aexit__(*exc)

    @property
    def response_headers(self):
        return self.source.response.headers

    async def next(self, what):
        try:
            item = await asyncio.wait_for(self.queue.get(), WAIT)
        except asyncio.TimeoutError:
            raise Mismatch(f"{self.path}: no frame within {WAIT} s while waiting for {what}") from None
        if isinstance(item, Exception):
            raise Mismatch(f"{self.path}: stream failed while waiting for {what}: {item!r}")
        return item

    async def expect_transient(self, event_type):
        sse = await self.next(event_type)
        equal(sse.event, event_type, "frame type")
        frame = json.loads(sse.data)
        equal(frame["type"], event_type, f"{event_type} data.type")
        check("id" not in frame, f"{event_type} must carry no id in its data: {frame}")
        return sse, frame

    async def expect_event(self, envelope, what):
        """The next frame is the stored event `envelope`, framed as the
        contract says (`id:` = envelope id, `event:` = its type)."""
        sse = await self.next(what)
        equal(sse.event, envelope["type"], f"{what}: event type")
        equal(sse.id, envelope["id"], f"{what}: SSE id")
        equal(json.loads(sse.data), envelope, f"{what}: data")
        return sse

    async def expect_quiet(self, seconds, what):
        """Nothing but heartbeats (which httpx-sse does not surface) for a while."""
        try:
            item = await asyncio.wait_for(self.queue.get(), seconds)
        except asyncio.TimeoutError:
            return
        raise Mismatch(f"{self.path}: expected nothing more ({what}), got {item!r}")


def check_stream_headers(headers, what):
    content_type = headers.get("content-type", "")
    check(content_type.split(";")[0].strip() == "text/event-stream", f"{what}: Content-Type {content_type!r}")
    equal(headers.get("cache-control"), "no-cache", f"{what}: Cache-Control")
    equal(headers.get("x-accel-buffering"), "no", f"{what}: X-Accel-Buffering")
    check("content-encoding" not in headers, f"{what}: streams are not compressed ({headers.get('content-encoding')})")


def client_for(base):
    # No read timeout: a stream may be quiet for a heartbeat (15 s) and more.
    # No proxy from the environment: the server is the one given.
    return httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10.0, read=None), trust_env=False)


async def post(client, path, body=None, token=None, expect=201, headers=None):
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    response = await client.post(path, json=body, headers=headers)
    if response.status_code != expect:
        raise Mismatch(f"POST {path}: expected {expect}, got {response.status_code}: {response.text}")
    return response.json() if response.content else None


async def get_json(client, path, params, token, expect=200):
    response = await client.get(path, params=params, headers={"Authorization": f"Bearer {token}"})
    if response.status_code != expect:
        raise Mismatch(f"GET {path}: expected {expect}, got {response.status_code}: {response.text}")
    return response.json()


def mint_token(args):
    """As the README says: `make -s token`, or the same with another secret."""
    if args.token:
        return args.token
    if args.token_secret:
        binary = args.bin or str(REPO / "target/release/pollcast")
        command = [binary, "token", "--token-secret", args.token_secret,
                   "--sub", "demo", "--publish", "demo:*", "--subscribe", "demo:*"]
    else:
        command = ["make", "-s", "-C", str(REPO), "token"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise Mismatch(f"minting a token with {' '.join(command[:2])}… failed: {result.stderr.strip()}")
    return result.stdout.strip()


async def try_it_with_curl(base, token):
    topic = f"demo:hello-{secrets.token_hex(4)}"
    auth = {"Authorization": f"Bearer {token}"}
    publish_path = f"/v1/topics/{topic}/events"

    async with client_for(base) as client:
        step(f"watching {topic}")
        async with Stream(client, "/v1/events", {"topic": topic}, auth) as watcher:
            check_stream_headers(watcher.response_headers, "GET /v1/events")
            sse, frame = await watcher.expect_transient("connection:established")
            equal(sse.retry, 2000, "retry: line of the first frame")
            equal(sse.id, "", "connection:established SSE id")
            check(frame["payload"].get("connectionId"), f"connectionId in {frame}")
            check(frame["payload"].get("serverVersion"), f"serverVersion in {frame}")

            step("publishing two events; the watcher prints each")
            hello = await post(client, publish_path, {"type": "demo:said", "payload": {"text": "hello"}}, token)
            await watcher.expect_event(hello, "the first event")
            again = await post(client, publish_path, {"type": "demo:said", "payload": {"text": "again"}}, token)
            await watcher.expect_event(again, "the second event")
            for envelope, text in ((hello, "hello"), (again, "again")):
                equal(envelope["topic"], topic, "envelope topic")
                equal(envelope["type"], "demo:said", "envelope type")
                equal(envelope["payload"], {"text": text}, "envelope payload")
                check(envelope.get("timestamp") and envelope.get("traceId"), f"timestamp and traceId in {envelope}")
            check(int(again["id"]) > int(hello["id"]), f"ids increase: {hello['id']} then {again['id']}")
        # The watcher is gone (Ctrl-C); an event is published meanwhile.
        missed = await post(client, publish_path, {"type": "demo:said", "payload": {"text": "while away"}}, token)

        step(f"coming back with Last-Event-ID: {hello['id']}")
        headers = {**auth, "Last-Event-ID": hello["id"]}
        async with Stream(client, "/v1/events", {"topic": topic}, headers) as watcher:
            check_stream_headers(watcher.response_headers, "GET /v1/events with Last-Event-ID")
            sse, frame = await watcher.expect_transient("connection:reconnected")
            equal(sse.retry, 2000, "retry: line of the reconnected frame")
            equal(frame["payload"]["replayFrom"], hello["id"], "replayFrom")
            equal(frame["payload"]["replayCount"], 2, "replayCount")
            await watcher.expect_event(again, "the first replayed event")
            await watcher.expect_event(missed, "the event published while away")
            live = await post(client, publish_path, {"type": "demo:said", "payload": {"text": "live"}}, token)
            await watcher.expect_event(live, "the live event after the replay")
            await watcher.expect_quiet(0.3, "no duplicate after the seam")

        step("?lastEventId= replays too, and the header wins over it")
        params = {"topic": topic, "lastEventId": hello["id"]}
        async with Stream(client, "/v1/events", params, auth) as watcher:
            _, frame = await watcher.expect_transient("connection:reconnected")
            equal(frame["payload"]["replayFrom"], hello["id"], "replayFrom with ?lastEventId=")
            for envelope in (again, missed, live):
                await watcher.expect_event(envelope, "a replayed event (?lastEventId=)")
        headers = {**auth, "Last-Event-ID": missed["id"]}
        async with Stream(client, "/v1/events", params, headers) as watcher:
            _, frame = await watcher.expect_transient("connection:reconnected")
            equal(frame["payload"]["replayFrom"], missed["id"], "replayFrom when both are given")
            await watcher.expect_event(live, "the only event after the header's id")

        step("the same events as JSON from the history endpoint (demo:*)")
        history = await get_json(client, "/v1/events/history", {"topic": "demo:*", "after": hello["id"]}, token)
        ids = [int(e["id"]) for e in history]
        equal(ids, sorted(set(ids)), "history ids strictly increasing")
        equal([e for e in history if e["topic"] == topic], [again, missed, live], "history of the topic after the first id")

        step("long-poll: an empty wait returns [] when it ends")
        started = time.monotonic()
        empty = await get_json(client, "/v1/events/history", {"topic": topic, "after": live["id"], "wait": "1"}, token)
        elapsed = time.monotonic() - started
        equal(empty, [], "long-poll with nothing new")
        check(0.9 <= elapsed < 3, f"an empty 1 s long-poll took {elapsed:.2f} s")

        step("long-poll: an event ends the wait at once")
        started = time.monotonic()
        poll = asyncio.create_task(get_json(client, "/v1/events/history",
                                            {"topic": topic, "after": live["id"], "wait": "10"}, token))
        await asyncio.sleep(0.5)
        check(not poll.done(), "the long-poll returned before any event")
        published_at = time.monotonic()
        late = await post(client, publish_path, {"type": "demo:said", "payload": {"text": "late"}}, token)
        answer = await poll
        returned = time.monotonic()
        equal(answer, [late], "long-poll answer")
        check(returned - published_at < 1.0, f"the long-poll returned {returned - published_at:.2f} s after the publish")
        check(returned - started < 5, f"the long-poll took {returned - started:.2f} s")


async def live_polling(base, admin_key):
    async with client_for(base) as client:
        step("live polling: a presenter creates a session")
        admin = {"X-Admin-Key": admin_key} if admin_key else None
        created = await post(client, "/v1/sessions", {"title": "All hands"}, headers=admin)
        sid, slug, presenter = created["sessionId"], created["slug"], created["presenterToken"]

        step("anyone watches it without a token; a participant joins by code")
        async with Stream(client, f"/v1/sessions/{sid}/events") as watcher:
            check_stream_headers(watcher.response_headers, "GET /v1/sessions/{id}/events")
            await watcher.expect_transient("connection:established")
            joined = await post(client, f"/v1/sessions/{slug}/participants", {"displayName": "Ann"})
            pid_, participant = joined["participantId"], joined["participantToken"]
            sse = await watcher.next("participant:joined")
            equal(sse.event, "participant:joined", "event after the join")
            equal(json.loads(sse.data)["payload"]["participantId"], pid_, "participant:joined participantId")

            async with Stream(client, f"/v1/sessions/{sid}/events",
                              headers={"Authorization": f"Bearer {participant}"}) as own:
                await own.expect_transient("connection:established")

                step("the presenter starts the session, adds a poll and opens it")
                await post(client, f"/v1/sessions/{sid}/start", token=presenter, expect=200)
                poll = await post(client, f"/v1/sessions/{sid}/polls",
                                  {"question": "Lunch?", "pollType": "multiple_choice", "options": ["Pizza", "Salad"]},
                                  token=presenter)
                poll_id, option = poll["pollId"], poll["options"][0]["optionId"]
                await post(client, f"/v1/polls/{poll_id}/activate", token=presenter, expect=200)

                step("the participant votes; the watcher sees the results, never who voted")
                vote = await post(client, f"/v1/polls/{poll_id}/votes",
                                  {"voteData": {"selectedOptionIds": [option]}}, token=participant)
                equal(vote["participantId"], pid_, "the vote's answer names its voter")

                expected = ["session:started", "poll:created", "poll:activated", "vote:accepted"]
                seen = []
                last_id = 0
                for event_type in expected:
                    sse = await watcher.next(event_type)
                    data = json.loads(sse.data)
                    seen.append((sse.event, data))
                    equal(sse.event, event_type, f"watcher event {len(seen)}")
                    equal(data["topic"], f"session:{sid}", f"{event_type} topic")
                    equal(data["payload"]["sessionId"], sid, f"{event_type} sessionId")
                    check(int(sse.id) > last_id, f"ids increase on the session stream ({last_id} then {sse.id})")
                    last_id = int(sse.id)
                results = seen[-1][1]["payload"]
                check("participantId" not in results, f"the results broadcast names no voter: {results}")
                equal(results["currentVoteCount"], 1, "currentVoteCount")
                equal({b["optionId"]: b["voteCount"] for b in results["voteBreakdown"]}[option], 1, "votes for the option")

                # The participant's stream: the same broadcasts, plus its own
                # confirmation on participant:<id>, merged in id order.
                own_seen = []
                while len(own_seen) < 5:
                    sse = await own.next("the participant's events")
                    own_seen.append((sse.event, json.loads(sse.data)))
                own_ids = [int(d["id"]) for _, d in own_seen]
                equal(own_ids, sorted(own_ids), "participant stream in id order")
                unicast = [d for t, d in own_seen if t == "vote:accepted" and d["topic"] == f"participant:{pid_}"]
                equal(len(unicast), 1, f"one unicast confirmation in {[(t, d['topic']) for t, d in own_seen]}")
                equal(unicast[0]["payload"]["participantId"], pid_, "the unicast confirmation names the voter")
                equal(unicast[0]["payload"]["voteId"], vote["voteId"], "unicast voteId")
                broadcast = [t for t, d in own_seen if d["topic"] == f"session:{sid}"]
                equal(broadcast, expected, "broadcasts on the participant's stream")


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("POLLCAST_URL", "http://127.0.0.1:8080"))
    parser.add_argument("--token", default=os.environ.get("POLLCAST_TOKEN"))
    parser.add_argument("--token-secret", default=os.environ.get("POLLCAST_TOKEN_SECRET"))
    parser.add_argument("--bin", default=os.environ.get("POLLCAST_BIN"))
    parser.add_argument("--admin-key", default=os.environ.get("POLLCAST_ADMIN_KEY"))
    args = parser.parse_args()
    base = args.url.rstrip("/")
    started = time.monotonic()
    try:
        token = mint_token(args)
        await try_it_with_curl(base, token)
        await live_polling(base, args.admin_key)
    except Mismatch as error:
        print(f"httpx-sse: FAILED: {error}", file=sys.stderr)
        return 1
    except httpx.HTTPError as error:
        print(f"httpx-sse: FAILED: {type(error).__name__} talking to {base}: {error}", file=sys.stderr)
        return 1
    print(f"httpx-sse: walk-through ok against {base} ({checks} checks, {time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
