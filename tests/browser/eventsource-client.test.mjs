// An SSE client nobody here wrote: the npm `eventsource` package (4.x, the
// WHATWG EventSource on Node's fetch) against a real pollcast on Postgres.
//
// What it proves:
// - named event types reach addEventListener(type), each event's data is the
//   stored envelope {id, type, topic, timestamp, traceId, payload} and its
//   lastEventId is the envelope's id; `connection:*` frames arrive as named
//   events without an id; nothing lands on the generic `message` listener;
// - a token works both as a header (through the package's `fetch` option)
//   and as ?access_token=; a refused token makes the client give up (no
//   reconnect loop), with the HTTP status on the error event;
// - after the server is killed (SIGKILL, twice: once staying down past a few
//   retries, once coming straight back) or stopped (SIGTERM, which ends the
//   streams cleanly) while a publisher keeps publishing and retrying, the
//   client reconnects by itself (retrying while the server is down), sends
//   the id it saw last as Last-Event-ID (seen both in its request and in the
//   `connection:reconnected` frame's replayFrom, whose replayCount covers
//   what was stored meanwhile), and ends up with exactly the stored events:
//   ids strictly increasing and equal to the topic's full history, so
//   nothing was lost and nothing came twice; every acknowledged publish is
//   in that history.
//
// Run: cd tests/browser && node --test eventsource-client.test.mjs
// (needs target/release/pollcast and Postgres; see lib/server.mjs).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { EventSource } from 'eventsource';
import { Pollcast, mintToken } from './lib/server.mjs';

// A short reconnection delay keeps the test quick; what is tested is that
// the client obeys the server's `retry:` line, whatever its value.
const RETRY_MS = 300;

let server;
let token;

before(async () => {
  server = await new Pollcast({ store: 'postgres', args: ['--retry', `${RETRY_MS}ms`] }).start();
  token = mintToken(server.secret, { sub: 'es-client', publish: ['es:*'], subscribe: ['es:*'] });
});

after(async () => {
  await server?.stop();
});

async function waitFor(predicate, what, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (predicate()) return;
    await sleep(20);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function publish(topic, type, payload) {
  const res = await server.request('POST', `/v1/topics/${topic}/events`, { token, body: { type, payload } });
  assert.equal(res.status, 201, `publish: ${JSON.stringify(res.body)}`);
  return res.body;
}

/** Every stored event of a topic, through the history endpoint, paged. */
async function history(topic) {
  const events = [];
  let afterId = '0';
  for (;;) {
    const res = await server.request('GET', `/v1/events/history?topic=${topic}&after=${afterId}&limit=1000`, { token });
    assert.equal(res.status, 200, `history: ${JSON.stringify(res.body)}`);
    if (res.body.length === 0) return events;
    events.push(...res.body);
    afterId = res.body.at(-1).id;
  }
}

/**
 * Opens an EventSource on `topic` and records everything it sees in one
 * timeline, in dispatch order: every request it makes (with the
 * Last-Event-ID it sent and how it went), the transient frames, the stored
 * events of `types`, errors.
 */
function openStream(topic, types, { auth = 'header' } = {}) {
  const url = new URL(`${server.url}/v1/events`);
  url.searchParams.set('topic', topic);
  if (auth === 'query') url.searchParams.set('access_token', token);
  const attempts = [];
  const timeline = [];
  let gate = null;
  const options = {
    fetch: async (input, init) => {
      // While held, the package's next request waits here, as if its retry
      // timer fired later.
      if (gate) await gate;
      // The package's own request; headers is a plain object here.
      const attempt = { at: Date.now(), lastEventId: init.headers?.['Last-Event-ID'] ?? null, accept: init.headers?.Accept };
      attempts.push(attempt);
      timeline.push({ kind: 'request', attempt });
      const headers = auth === 'header' ? { ...init.headers, Authorization: `Bearer ${token}` } : init.headers;
      try {
        const res = await fetch(input, { ...init, headers });
        attempt.status = res.status;
        attempt.headers = Object.fromEntries(res.headers);
        return res;
      } catch (error) {
        attempt.error = error.cause?.code ?? error.message;
        throw error;
      }
    },
  };
  const es = new EventSource(url, options);
  for (const type of ['connection:established', 'connection:reconnected', 'connection:reset']) {
    es.addEventListener(type, (e) => timeline.push({ kind: 'transient', type, lastEventId: e.lastEventId, data: JSON.parse(e.data) }));
  }
  for (const type of types) {
    es.addEventListener(type, (e) => timeline.push({ kind: 'event', type: e.type, lastEventId: e.lastEventId, data: JSON.parse(e.data) }));
  }
  es.addEventListener('message', (e) => timeline.push({ kind: 'message', data: e.data }));
  es.addEventListener('error', (e) => timeline.push({ kind: 'error', code: e.code, message: e.message, readyState: es.readyState }));
  const events = () => timeline.filter((t) => t.kind === 'event');
  /** Holds the client's next requests until the returned function is called. */
  const hold = () => {
    let release;
    gate = new Promise((resolve) => { release = resolve; });
    return () => { gate = null; release(); };
  };
  return { es, attempts, timeline, events, hold };
}

test('named events carry the stored envelope; connection frames carry no id', async () => {
  const topic = 'es:named';
  const stream = openStream(topic, ['es:first', 'es:second']);
  try {
    await waitFor(() => stream.timeline.some((t) => t.type === 'connection:established'), 'connection:established');
    const open = stream.timeline.find((t) => t.type === 'connection:established');
    assert.equal(open.lastEventId, '', 'a connection frame must not set an id');
    assert.equal(open.data.type, 'connection:established');
    assert.equal(open.data.id, undefined);
    assert.match(open.data.payload.connectionId, /^[0-9a-f-]{36}$/);
    assert.equal(typeof open.data.payload.serverVersion, 'string');

    const response = stream.attempts[0];
    assert.equal(response.accept, 'text/event-stream');
    assert.equal(response.lastEventId, null, 'first request has no Last-Event-ID');
    assert.equal(response.status, 200);
    assert.match(response.headers['content-type'], /^text\/event-stream/);
    assert.equal(response.headers['cache-control'], 'no-cache');
    assert.equal(response.headers['x-accel-buffering'], 'no');
    assert.equal(response.headers['content-encoding'], undefined);

    const published = [
      await publish(topic, 'es:first', { n: 1, text: 'héllo, ünïcode ✓' }),
      await publish(topic, 'es:second', { n: 2, lines: 'one\ntwo\r\nthree' }),
      await publish(topic, 'es:first', { n: 3, nested: { list: [1, 2, 3] } }),
    ];
    await waitFor(() => stream.events().length === 3, 'three events');
    const got = stream.events();
    for (const [i, sent] of published.entries()) {
      assert.equal(got[i].type, sent.type, 'dispatched under its own type');
      assert.equal(got[i].lastEventId, sent.id, 'lastEventId is the envelope id');
      assert.deepEqual(got[i].data, sent, 'data is the envelope the publish returned');
      assert.deepEqual(Object.keys(got[i].data).sort(), ['id', 'payload', 'timestamp', 'topic', 'traceId', 'type']);
      assert.equal(got[i].data.topic, topic);
    }
    assert.ok(BigInt(got[0].data.id) < BigInt(got[1].data.id) && BigInt(got[1].data.id) < BigInt(got[2].data.id));
    assert.deepEqual(stream.timeline.filter((t) => t.kind === 'message'), [], 'no unnamed event');
    assert.deepEqual(stream.timeline.filter((t) => t.kind === 'error'), [], 'no error');
  } finally {
    stream.es.close();
  }
});

test('?access_token= works; a refused token stops the client instead of retrying', async () => {
  const topic = 'es:query';
  const stream = openStream(topic, ['es:ping'], { auth: 'query' });
  try {
    await waitFor(() => stream.timeline.some((t) => t.type === 'connection:established'), 'connection:established');
    const sent = await publish(topic, 'es:ping', { ok: true });
    await waitFor(() => stream.events().length === 1, 'the event');
    assert.deepEqual(stream.events()[0].data, sent);
  } finally {
    stream.es.close();
  }

  // A topic outside the token's subscribe claims: 403 before any stream.
  const refused = openStream('other:topic', []);
  try {
    await waitFor(() => refused.es.readyState === EventSource.CLOSED, 'the client to give up');
    await sleep(RETRY_MS * 3);
    assert.equal(refused.attempts.length, 1, 'no reconnection after a non-200 answer');
    assert.equal(refused.attempts[0].status, 403);
    const errors = refused.timeline.filter((t) => t.kind === 'error');
    assert.equal(errors.length, 1);
    assert.equal(errors[0].code, 403);
  } finally {
    refused.es.close();
  }
});

test('reconnects after the server is killed and resumes with Last-Event-ID: no gap, no duplicate', async (t) => {
  const topic = 'es:reconnect';
  const type = 'es:tick';
  const stream = openStream(topic, [type]);

  // A publisher that keeps going whatever happens to the server, retrying
  // (as a new event: the test's truth is what was stored, not what was acked).
  let publishing = true;
  const publisher = { acked: [], failed: 0 };
  const publisherDone = (async () => {
    let n = 0;
    while (publishing) {
      n += 1;
      try {
        const res = await server.request('POST', `/v1/topics/${topic}/events`, { token, body: { type, payload: { n } } });
        if (res.status === 201) publisher.acked.push(res.body.id);
        else publisher.failed += 1;
      } catch {
        publisher.failed += 1; // connection refused or reset while it is down
      }
      await sleep(25);
    }
  })();

  const received = () => stream.events().map((e) => e.data.id);
  const lastReceived = () => received().at(-1);
  const drops = [];

  async function drop(downMs, signal = 'SIGKILL') {
    const seenBefore = received().length;
    await waitFor(() => received().length >= seenBefore + 5, 'five more live events before the drop');
    const errorsBefore = stream.timeline.filter((t) => t.kind === 'error').length;
    const attemptsBefore = stream.attempts.length;
    const failedBefore = publisher.failed;
    if (signal === 'SIGKILL') {
      await server.kill();
    } else {
      // A graceful stop: the server ends every stream cleanly and exits.
      const exited = new Promise((resolve) => server.child.once('exit', resolve));
      server.child.kill(signal);
      await exited;
    }
    // The client notices the dropped connection (error event, CONNECTING).
    await waitFor(() => stream.timeline.filter((t) => t.kind === 'error').length > errorsBefore, 'the client to see the drop');
    assert.equal(stream.es.readyState, EventSource.CONNECTING, 'it is reconnecting, not closed');
    const lastSeen = lastReceived();
    let missedWhileAway = 0;
    if (downMs > 0) {
      await sleep(downMs);
      // While down, both the client and the publisher were refused and
      // kept trying.
      const refused = stream.attempts.slice(attemptsBefore).filter((a) => a.error);
      assert.ok(refused.length >= 2, `the client retried while the server was down (${JSON.stringify(stream.attempts.slice(attemptsBefore))})`);
      for (const a of refused) assert.equal(a.lastEventId, lastSeen, 'each retry names the last id seen');
      // Spaced by the server's `retry:` (the package's own default is 3 s).
      for (let i = 1; i < refused.length; i += 1) {
        const gap = refused[i].at - refused[i - 1].at;
        assert.ok(gap >= RETRY_MS * 0.9 && gap < RETRY_MS * 3, `retries ${gap} ms apart, retry: ${RETRY_MS}`);
      }
      assert.ok(publisher.failed > failedBefore, 'the publisher was refused while the server was down');
      // Make sure there is something to replay: the client's next retry
      // waits until the server is back and three more events are stored.
      const release = stream.hold();
      await server.start();
      const ackedBefore = publisher.acked.length;
      await waitFor(() => publisher.acked.length >= ackedBefore + 3, 'three publishes on the restarted server');
      missedWhileAway = publisher.acked.length - ackedBefore;
      release();
    } else {
      await server.start();
    }
    await waitFor(
      () => stream.timeline.some((t) => t.type === 'connection:reconnected' && !drops.some((d) => d.frame === t)),
      'connection:reconnected after the restart',
    );
    const frame = stream.timeline.find((t) => t.type === 'connection:reconnected' && !drops.some((d) => d.frame === t));
    drops.push({ lastSeen, frame, missedWhileAway, attempts: stream.attempts.slice(attemptsBefore) });
    await waitFor(() => received().length >= seenBefore + 10, 'live events again after the restart');
  }

  try {
    await waitFor(() => stream.timeline.some((t) => t.type === 'connection:established'), 'connection:established');
    // Killed and down long enough for several refused retries, back with
    // events to replay; killed and straight back, the first retry finding
    // it; stopped gracefully (SIGTERM ends the streams) and straight back.
    await drop(RETRY_MS * 5);
    await drop(0);
    await drop(0, 'SIGTERM');
    assert.ok(drops[0].missedWhileAway >= 3);
    publishing = false;
    await publisherDone;

    const stored = (await history(topic)).map((e) => e.id);
    await waitFor(() => lastReceived() === stored.at(-1), `the last stored event ${stored.at(-1)}`);
    const ids = received();

    for (let i = 1; i < ids.length; i += 1) {
      assert.ok(BigInt(ids[i - 1]) < BigInt(ids[i]), `ids strictly increasing: ${ids[i - 1]} then ${ids[i]}`);
    }
    assert.deepEqual(ids, stored, 'received exactly the stored events: no gap, no duplicate');
    const missing = publisher.acked.filter((id) => !stored.includes(id));
    assert.deepEqual(missing, [], 'every acknowledged publish is stored');

    for (const { lastSeen, frame, attempts, missedWhileAway } of drops) {
      assert.equal(frame.lastEventId, '', 'connection:reconnected carries no id');
      assert.equal(frame.data.payload.replayFrom, lastSeen, 'the server replayed from the last id the client saw');
      assert.equal(typeof frame.data.payload.replayCount, 'number');
      assert.ok(
        frame.data.payload.replayCount >= missedWhileAway,
        `replayCount ${frame.data.payload.replayCount} counts the ${missedWhileAway} events stored before the client came back`,
      );
      // The request that got through sent that id as Last-Event-ID.
      const accepted = attempts.filter((a) => a.status === 200);
      assert.equal(accepted.length, 1, 'one successful reconnection per drop');
      assert.equal(accepted[0].lastEventId, lastSeen);
      // What followed the frame is exactly what came after that id.
      const at = stream.timeline.indexOf(frame);
      const next = stream.timeline.slice(at + 1).find((t) => t.kind === 'event');
      assert.equal(next.data.id, stored[stored.indexOf(lastSeen) + 1], 'the first event after the reconnection is the next stored one');
    }
    t.diagnostic(
      `${stored.length} events stored and received; publisher: ${publisher.acked.length} acked, ${publisher.failed} refused; ` +
        drops
          .map((d, i) => `drop ${i + 1}: resumed from ${d.lastSeen} (replayCount ${d.frame.data.payload.replayCount}) after ${d.attempts.filter((a) => a.error).length} refused retries`)
          .join('; '),
    );
    assert.deepEqual(stream.timeline.filter((t) => t.kind === 'message'), []);
    assert.equal(stream.timeline.filter((t) => t.type === 'connection:reset').length, 0, 'never reset');
    assert.equal(stream.es.readyState, EventSource.OPEN);
  } finally {
    publishing = false;
    await publisherDone;
    stream.es.close();
  }
});
