#!/usr/bin/env python3
"""pollcast's streams through Squid as a forward proxy, read by Python
httpx (its `proxy=` setting) with httpx-sse: clients nobody here wrote.

Usage: httpx_via_proxy.py PROXY_URL POLLCAST_URL TOKEN TOPIC MAX_LATENCY_MS
(the token may publish and subscribe TOPIC). Asserts, every request through
squid (its Via header is on every answer; the environment's proxy
settings are ignored):
  - a stream starts with connection:established; three events, each
    published and awaited before the next, arrive in order with their
    envelope, each within MAX_LATENCY_MS of the start of its POST;
  - after the stream is dropped and two events published, a stream with
    Last-Event-ID starts with connection:reconnected (replayCount 2), then
    exactly the two missed events, then a live one.
Run by tests/clients/squid-proxy.sh with the venv of scripts/clients.sh;
exits non-zero with a message on any mismatch.
"""

import asyncio
import sys
import time

import httpx
from httpx_sse import aconnect_sse

proxy, upstream, token, topic, max_latency_ms = sys.argv[1:6]
max_latency = float(max_latency_ms) / 1000
auth = {"Authorization": f"Bearer {token}"}
stream_url = f"{upstream}/v1/events"


def fail(message):
    print(f"squid-proxy: FAILED: httpx: {message}", file=sys.stderr)
    sys.exit(1)


async def reader(client, queue, headers):
    """Puts the stream's response, then each event (time, sse), on queue."""
    async with aconnect_sse(client, "GET", stream_url, params={"topic": topic}, headers={**auth, **headers}) as source:
        await queue.put(source.response)
        async for sse in source.aiter_sse():
            await queue.put((time.monotonic(), sse))


async def publish(client, n):
    started = time.monotonic()
    answer = await client.post(f"{upstream}/v1/topics/{topic}/events", headers=auth,
                               json={"type": "demo:httpx", "payload": {"n": n}})
    if answer.status_code != 201 or "squid" not in answer.headers.get("via", ""):
        fail(f"publish {n}: {answer.status_code} via {answer.headers.get('via')!r}: {answer.text}")
    return started, answer.json()


async def next_event(queue):
    try:
        return await asyncio.wait_for(queue.get(), 5)
    except asyncio.TimeoutError:
        fail("no frame within 5 s")


async def open_stream(client, headers):
    queue = asyncio.Queue()
    task = asyncio.create_task(reader(client, queue, headers))
    response = await next_event(queue)
    if response.status_code != 200 or "squid" not in response.headers.get("via", ""):
        fail(f"stream: {response.status_code} via {response.headers.get('via')!r}")
    return task, queue


async def stop(task):
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass


async def main():
    # trust_env=False: only the proxy given here, whatever the environment says.
    async with httpx.AsyncClient(proxy=proxy, trust_env=False, timeout=10) as client:
        task, queue = await open_stream(client, {})
        _, first = await next_event(queue)
        if first.event != "connection:established":
            fail(f"first frame {first.event}")
        latencies, last = [], None
        for n in range(1, 4):
            started, envelope = await publish(client, n)
            at, sse = await next_event(queue)
            if sse.id != envelope["id"] or sse.json() != envelope:
                fail(f"expected event {envelope}, got id {sse.id} {sse.event} {sse.data}")
            latencies.append(at - started)
            last = sse.id
        if max(latencies) > max_latency:
            fail(f"events took {[round(x * 1000) for x in latencies]} ms through squid (limit {max_latency_ms})")
        await stop(task)
        missed = [(await publish(client, n))[1]["id"] for n in range(4, 6)]
        task, queue = await open_stream(client, {"Last-Event-ID": last})
        _, first = await next_event(queue)
        if first.event != "connection:reconnected" or first.json()["payload"]["replayCount"] != len(missed):
            fail(f"resume: first frame {first.event} {first.data}")
        got = [(await next_event(queue))[1].id for _ in missed]
        if got != missed:
            fail(f"resume from {last}: ids {got}, expected {missed}")
        _, envelope = await publish(client, 6)
        _, sse = await next_event(queue)
        if sse.id != envelope["id"]:
            fail(f"live after resume: id {sse.id}, expected {envelope['id']}")
        await stop(task)
    print(f"squid-proxy: httpx {httpx.__version__} with proxy=: 3 events one by one "
          f"({min(latencies) * 1000:.0f}-{max(latencies) * 1000:.0f} ms), resume got {got} then live")


asyncio.run(main())
