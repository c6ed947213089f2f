// EventSource conformance of pollcast, asserted in real Chromium against the
// real server: the cases of the web-platform-tests `eventsource` suite
// (https://github.com/web-platform-tests/wpt/tree/master/eventsource) that
// a server can get right or wrong, rewritten for pollcast's streams. Each
// test is named after the WPT test it ports; the code is our own.
//
// What a server decides for an EventSource: a non-200 status or another
// content type closes it for good (pollcast's 400/401/403 are meant that
// way), while a 200 text/event-stream keeps it reconnecting, by itself,
// with the Last-Event-ID it last saw, after the `retry:` delay the server
// sent. So pollcast must answer every reconnect it can serve with a 200,
// even when the Last-Event-ID is unknown, too old or malformed
// (`connection:reset`), and across origins its CORS answers must let that
// reconnect through.
//
// Run: `cargo build --release --bin pollcast`, then
// `cd tests/browser && node --test conformance.test.mjs` (Postgres on
// 127.0.0.1:5432, or POLLCAST_TEST_PG).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHmac } from 'node:crypto';
import { Pollcast, mintToken } from './lib/server.mjs';
import { launchChromium } from './lib/browser.mjs';

const TEST_TIMEOUT = 60_000;
const WAIT = 15_000;
const TYPES = [
  'connection:established',
  'connection:reconnected',
  'connection:reset',
  'connection:closing',
  'demo:said',
  'demo:utf-8',
  'system:subscribed',
  'system:status',
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns a truthy value, or fails naming `what`. */
async function until(what, check, timeoutMs = WAIT) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await sleep(40);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

function base64url(value) {
  return Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
}

/** An HS256 token signed here, for claims `pollcast token` will not mint (an expired one). */
function signToken(secret, claims) {
  const unsigned = `${base64url({ alg: 'HS256', typ: 'JWT' })}.${base64url(claims)}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

/**
 * Stops a server and drops its database. Pollcast.kill() waits for an
 * `exit` that has already been emitted when the child died of a signal
 * before, so a child killed earlier is forgotten first.
 */
async function stopServer(server) {
  if (server.child && server.child.signalCode !== null) server.child = null;
  await server.stop();
}

function demoToken(server) {
  return mintToken(server.secret, { sub: 'browser', publish: ['demo:*'], subscribe: ['demo:*'] });
}

async function publish(server, token, topic, payload, type = 'demo:said') {
  const res = await server.request('POST', `/v1/topics/${topic}/events`, { token, body: { type, payload } });
  assert.equal(res.status, 201, `publish: ${JSON.stringify(res.body)}`);
  return res.body;
}

function streamPath(topic, token, extra = '') {
  const q = new URLSearchParams({ topic });
  if (token) q.set('access_token', token);
  return `/v1/events?${q}${extra}`;
}

/**
 * A plain page on its own origin: what cross-origin EventSources and
 * fetches start from.
 */
async function pageServer() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><meta charset="utf-8"><title>pollcast conformance</title>');
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const origin = `http://127.0.0.1:${server.address().port}`;
  return {
    origin,
    close: () => {
      const closed = new Promise((r) => server.close(r));
      server.closeAllConnections();
      return closed;
    },
  };
}

/**
 * A transparent HTTP proxy in front of pollcast, the server-side witness:
 * it records every request (method, headers, status), and can cut every
 * open stream (as a dropped connection would), refuse connections for a
 * while (a server that is down), or add bytes to the streams it carries.
 */
class Tap {
  constructor(target) {
    this.target = target;
    this.requests = [];
    this.streams = new Set();
    this.down = false;
  }

  get url() {
    return `http://127.0.0.1:${this.server.address().port}`;
  }

  async start() {
    this.server = http.createServer((req, res) => this.forward(req, res));
    await new Promise((r) => this.server.listen(0, '127.0.0.1', r));
    return this;
  }

  forward(req, res) {
    const entry = { method: req.method, path: req.url, headers: req.headers, at: Date.now() };
    this.requests.push(entry);
    if (this.down) {
      entry.refused = true;
      req.socket.destroy();
      return;
    }
    const upstream = http.request({
      host: '127.0.0.1',
      port: this.target.port,
      method: req.method,
      path: req.url,
      headers: req.headers,
      agent: false,
    });
    upstream.on('error', () => req.socket.destroy());
    upstream.on('response', (answer) => {
      entry.status = answer.statusCode;
      entry.responseHeaders = answer.headers;
      res.writeHead(answer.statusCode, answer.headers);
      res.flushHeaders();
      const stream = { res, upstream, text: '' };
      if (String(answer.headers['content-type']).startsWith('text/event-stream')) {
        this.streams.add(stream);
        entry.stream = stream;
      }
      answer.on('data', (chunk) => {
        stream.text += chunk.toString('utf8');
        res.write(chunk);
      });
      answer.on('close', () => {
        this.streams.delete(stream);
        if (answer.complete) res.end();
        else res.destroy();
      });
    });
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  }

  /** Cuts every open stream mid-body: the browser sees a network error. */
  drop() {
    for (const { res, upstream } of this.streams) {
      res.socket?.destroy();
      upstream.destroy();
    }
    this.streams.clear();
  }

  /** Writes raw SSE text to every open stream, between pollcast's frames. */
  inject(text) {
    for (const { res } of this.streams) res.write(text);
  }

  streamRequests() {
    return this.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/v1/events?'));
  }

  close() {
    this.drop();
    this.server.closeAllConnections?.();
    return new Promise((r) => this.server.close(r));
  }
}

/** Installed in every page: named EventSources logging everything they see. */
function installSources(types) {
  window.sources = {};
  window.openSource = (name, url, init) => {
    const log = [];
    const source = new EventSource(url, init);
    const stamp = (entry) => log.push({ ...entry, at: Date.now(), readyState: source.readyState });
    source.onopen = () => stamp({ kind: 'open' });
    source.onerror = () => stamp({ kind: 'error' });
    source.onmessage = (e) => stamp({ kind: 'message', type: e.type, data: e.data, lastEventId: e.lastEventId });
    for (const type of types) {
      source.addEventListener(type, (e) =>
        stamp({ kind: 'event', type: e.type, data: e.data, lastEventId: e.lastEventId }),
      );
    }
    window.sources[name] = { source, log };
    return { withCredentials: source.withCredentials, url: source.url };
  };
}

/** A Chromium page and what it asked of the network. */
class Page {
  static async open(context, url) {
    const page = new Page(await context.newPage());
    await page.page.goto(url);
    await page.page.evaluate(installSources, TYPES);
    return page;
  }

  constructor(page) {
    this.page = page;
    this.requests = [];
    page.on('request', (request) => {
      if (request.resourceType() !== 'eventsource') return;
      const entry = { url: request.url(), at: Date.now(), headers: request.allHeaders() };
      this.requests.push(entry);
      request.response().then((response) => {
        if (!response) return;
        entry.status = response.status();
        entry.responseHeaders = response.allHeaders();
      }, () => {});
    });
  }

  source(name, url, init) {
    return this.page.evaluate(([n, u, i]) => window.openSource(n, u, i), [name, url, init]);
  }

  log(name) {
    return this.page.evaluate((n) => window.sources[n].log, name);
  }

  readyState(name) {
    return this.page.evaluate((n) => window.sources[n].source.readyState, name);
  }

  close(name) {
    return this.page.evaluate((n) => window.sources[n].source.close(), name);
  }

  async events(name, type) {
    return (await this.log(name)).filter((e) => e.kind === 'event' && (!type || e.type === type));
  }

  /** Waits until the source has seen `count` events of `type`. */
  async waitEvents(name, type, count) {
    return until(`${count} × ${type} on ${name}`, async () => {
      const events = await this.events(name, type);
      return events.length >= count ? events : null;
    });
  }

  /** The EventSource requests to exactly this URL. */
  async requestsTo(url) {
    const href = new URL(url).href;
    const matching = this.requests.filter((r) => r.url === href);
    for (const r of matching) {
      r.headers = await r.headers;
      r.responseHeaders = await r.responseHeaders;
    }
    return matching;
  }

  dispose() {
    return this.page.close();
  }
}

const stored = (events) => events.filter((e) => e.type.startsWith('demo:'));
const payloadOf = (event) => JSON.parse(event.data).payload;

let browser;
before(async () => {
  browser = await launchChromium();
});
after(async () => {
  await browser?.close();
});

describe('refusals close the EventSource for good', () => {
  let server;
  let page;
  before(async () => {
    server = await new Pollcast({ store: 'memory', args: ['--retry', '200ms'] }).start();
    page = await Page.open(browser.context, `${server.url}/healthz`);
  });
  after(async () => {
    await page?.dispose();
    await (server && stopServer(server));
  });

  test('request-status-error: 400, 401 and 403 from pollcast close the EventSource', { timeout: TEST_TIMEOUT }, async () => {
    const token = demoToken(server);
    const expired = signToken(server.secret, {
      exp: Math.floor(Date.now() / 1000) - 60,
      subscribe: ['demo:*'],
    });
    const cases = {
      'no-token': { path: streamPath('demo:refused'), status: 401 },
      'bad-token': { path: streamPath('demo:refused', 'not-a-jwt'), status: 401 },
      'expired-token': { path: streamPath('demo:refused', expired), status: 401 },
      'forbidden-topic': { path: streamPath('other:refused', token), status: 403 },
      'bad-selector': { path: streamPath('Not A Topic', token), status: 400 },
      'bad-lastEventId-param': { path: streamPath('demo:refused', token, '&lastEventId=abc'), status: 400 },
    };
    for (const [name, { path, status }] of Object.entries(cases)) {
      const res = await server.request('GET', path);
      assert.equal(res.status, status, `${name}: pollcast's own answer`);
      assert.doesNotMatch(res.headers.get('content-type'), /event-stream/, name);
      await page.source(name, server.url + path);
    }
    for (const name of Object.keys(cases)) {
      await until(`${name} closed`, async () => (await page.readyState(name)) === 2);
    }
    // Ten retry delays: a source that were going to reconnect would have.
    await sleep(2000);
    for (const [name, { path, status }] of Object.entries(cases)) {
      const log = await page.log(name);
      assert.deepEqual(log.map((e) => e.kind), ['error'], `${name}: one error, nothing else`);
      assert.equal(log[0].readyState, 2, `${name}: CLOSED when error fires`);
      const requests = await page.requestsTo(server.url + path);
      assert.equal(requests.length, 1, `${name}: no second request`);
      assert.equal(requests[0].status, status, `${name}: status the browser saw`);
    }
  });

  test('format-mime-valid-bogus: a 200 that is not text/event-stream closes the EventSource', { timeout: TEST_TIMEOUT }, async () => {
    const token = demoToken(server);
    // The history endpoint answers 200 application/json for the same query.
    const path = `/v1/events/history?topic=demo:mime&access_token=${token}`;
    const res = await server.request('GET', path);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /application\/json/);
    await page.source('json', server.url + path);
    await until('json source closed', async () => (await page.readyState('json')) === 2);
    await sleep(1500);
    const log = await page.log('json');
    assert.deepEqual(log.map((e) => [e.kind, e.readyState]), [['error', 2]]);
    const requests = await page.requestsTo(server.url + path);
    assert.equal(requests.length, 1, 'no reconnect after a wrong content type');
    assert.equal(requests[0].status, 200);
  });
});

test('eventsource-reconnect: after a kill and restart the browser resumes from its Last-Event-ID', { timeout: TEST_TIMEOUT }, async () => {
  // Node A serves the browser; node B, on the same database, takes the
  // publishes while A is down.
  const a = await new Pollcast({ args: ['--retry', '500ms'] }).start();
  const b = new Pollcast({ args: ['--retry', '500ms'] });
  b.secret = a.secret;
  b.database = a.database;
  let page;
  try {
    await b.start();
    const token = demoToken(a);
    page = await Page.open(browser.context, `${a.url}/healthz`);
    const path = streamPath('demo:resume', token);
    await page.source('s', a.url + path);
    await page.waitEvents('s', 'connection:established', 1);
    const beforeKill = [];
    for (const n of [1, 2]) beforeKill.push(await publish(a, token, 'demo:resume', { n }));
    await page.waitEvents('s', 'demo:said', 2);

    await a.kill();
    await until('the drop seen as an error', async () => (await page.log('s')).some((e) => e.kind === 'error'));
    const whileDown = [];
    for (const n of [3, 4, 5]) whileDown.push(await publish(b, token, 'demo:resume', { n }));
    // start(), not restart(): Pollcast.kill() waits for an exit that has
    // already happened when the child was killed before.
    await a.start();

    const [reconnected] = await page.waitEvents('s', 'connection:reconnected', 1);
    await page.waitEvents('s', 'demo:said', 5);
    const live = await publish(a, token, 'demo:resume', { n: 6 });
    await page.waitEvents('s', 'demo:said', 6);
    await sleep(300);

    const lastBefore = beforeKill.at(-1).id;
    const info = JSON.parse(reconnected.data).payload;
    assert.equal(info.replayFrom, lastBefore);
    assert.equal(info.replayCount, 3, 'the events published while A was down are replayed');
    assert.equal(reconnected.lastEventId, lastBefore, 'an id-less frame keeps the last id');

    const events = await page.events('s', 'demo:said');
    const expected = [...beforeKill, ...whileDown, live];
    assert.deepEqual(events.map((e) => e.lastEventId), expected.map((e) => e.id), 'exactly once, in order');
    assert.deepEqual(events.map(payloadOf), expected.map((e) => e.payload));

    const log = await page.log('s');
    assert.ok(log.every((e) => e.readyState !== 2), 'the EventSource never closed');
    const requests = await page.requestsTo(a.url + path);
    assert.ok(requests.length >= 2);
    assert.equal(requests[0].headers['last-event-id'], undefined);
    for (const r of requests.slice(1)) {
      assert.equal(r.headers['last-event-id'], lastBefore, 'every reconnect carries Last-Event-ID');
    }
    const answered = requests.filter((r) => r.status !== undefined);
    assert.ok(answered.length >= 2, 'the reconnect was answered');
    assert.ok(answered.every((r) => r.status === 200), `never a non-200: ${answered.map((r) => r.status)}`);
  } finally {
    await page?.dispose();
    await b.kill();
    await stopServer(a);
  }
});

describe('eventsource-reconnect: a Last-Event-ID pollcast cannot resume from still gets 200 + connection:reset', () => {
  test('unknown id (memory store restarted from scratch)', { timeout: TEST_TIMEOUT }, async () => {
    const server = await new Pollcast({ store: 'memory', args: ['--retry', '300ms'] }).start();
    let page;
    try {
      const token = demoToken(server);
      page = await Page.open(browser.context, `${server.url}/healthz`);
      const path = streamPath('demo:unknown', token);
      await page.source('s', server.url + path);
      await page.waitEvents('s', 'connection:established', 1);
      await publish(server, token, 'demo:unknown', { n: 1 });
      const last = await publish(server, token, 'demo:unknown', { n: 2 });
      await page.waitEvents('s', 'demo:said', 2);

      await server.restart(); // the memory store forgets every id
      const [reset] = await page.waitEvents('s', 'connection:reset', 1);
      const info = JSON.parse(reset.data).payload;
      assert.equal(info.reason, 'unknown');
      assert.equal(info.lastEventId, last.id);
      assert.match(info.snapshotUrl, /^\/v1\/events\/history\?topic=demo%3Aunknown$/);
      assert.equal(await page.readyState('s'), 1, 'OPEN after the reset');

      const fresh = await publish(server, token, 'demo:unknown', { n: 3 });
      const events = await page.waitEvents('s', 'demo:said', 3);
      assert.equal(events.at(-1).lastEventId, fresh.id);
      assert.deepEqual(payloadOf(events.at(-1)), { n: 3 });

      const requests = await page.requestsTo(server.url + path);
      const answered = requests.slice(1).filter((r) => r.status !== undefined);
      assert.ok(answered.length >= 1);
      for (const r of answered) {
        assert.equal(r.headers['last-event-id'], last.id);
        assert.equal(r.status, 200);
      }
    } finally {
      await page?.dispose();
      await stopServer(server);
    }
  });

  test('format-field-id: malformed id (sent by something in between)', { timeout: TEST_TIMEOUT }, async () => {
    const server = await new Pollcast({ store: 'memory', args: ['--retry', '300ms'] }).start();
    const tap = await new Tap(server).start();
    let page;
    try {
      const token = demoToken(server);
      page = await Page.open(browser.context, `${tap.url}/healthz`);
      await page.source('s', tap.url + streamPath('demo:malformed', token));
      await page.waitEvents('s', 'connection:established', 1);
      await publish(server, token, 'demo:malformed', { n: 1 });
      await page.waitEvents('s', 'demo:said', 1);

      // An id field on its own sets the last event id without an event.
      tap.inject('id: not-an-id\n\n');
      await sleep(200);
      tap.drop();
      const [reset] = await page.waitEvents('s', 'connection:reset', 1);
      assert.equal(JSON.parse(reset.data).payload.reason, 'malformed');
      assert.equal(JSON.parse(reset.data).payload.lastEventId, 'not-an-id');
      assert.equal(reset.lastEventId, 'not-an-id');
      const reconnect = tap.streamRequests().at(-1);
      assert.equal(reconnect.headers['last-event-id'], 'not-an-id');
      assert.equal(reconnect.status, 200);

      await publish(server, token, 'demo:malformed', { n: 2 });
      await page.waitEvents('s', 'demo:said', 2);
      assert.equal(await page.readyState('s'), 1);
    } finally {
      await page?.dispose();
      await tap.close();
      await stopServer(server);
    }
  });

  test('too old id (dropped by retention while the browser was away)', { timeout: TEST_TIMEOUT }, async () => {
    const server = await new Pollcast({ store: 'memory', args: ['--retry', '300ms', '--retention', '1s'] }).start();
    const tap = await new Tap(server).start();
    let page;
    try {
      const token = demoToken(server);
      page = await Page.open(browser.context, `${tap.url}/healthz`);
      await page.source('s', tap.url + streamPath('demo:old', token));
      await page.waitEvents('s', 'connection:established', 1);
      const seen = await publish(server, token, 'demo:old', { n: 1 });
      await page.waitEvents('s', 'demo:said', 1);

      // The browser is cut off and cannot get back in while more events
      // are published and then expire.
      tap.down = true;
      tap.drop();
      await publish(server, token, 'demo:old', { n: 2 });
      await until('retention to drop what the browser missed', async () => {
        const res = await server.request('GET', `/v1/events/history?topic=demo:old&after=${seen.id}`, { token });
        return res.status === 409;
      });
      assert.ok(tap.requests.some((r) => r.refused), 'the browser tried to reconnect meanwhile');
      tap.down = false;

      const [reset] = await page.waitEvents('s', 'connection:reset', 1);
      const info = JSON.parse(reset.data).payload;
      assert.equal(info.reason, 'expired');
      assert.equal(info.lastEventId, seen.id);
      const reconnect = tap.streamRequests().at(-1);
      assert.equal(reconnect.headers['last-event-id'], seen.id);
      assert.equal(reconnect.status, 200);
      assert.equal(await page.readyState('s'), 1);
    } finally {
      await page?.dispose();
      await tap.close();
      await stopServer(server);
    }
  });
});

test('token expiry: the stream says so, and a fresh token resumes from its lastEventId without loss', { timeout: TEST_TIMEOUT }, async () => {
  const server = await new Pollcast({ args: ['--retry', '300ms'] }).start();
  let page;
  try {
    // `exp` has a resolution of a second: this token lives 2 to 3 s.
    const short = mintToken(server.secret, { sub: 'browser', publish: ['demo:*'], subscribe: ['demo:*'], ttl: '2s' });
    const fresh = demoToken(server);
    page = await Page.open(browser.context, `${server.url}/healthz`);
    // What a page does: on connection:closing with reconnect, close the
    // source (it would retry with the expired token and be refused), get a
    // new token from its backend, and open a new one from lastEventId.
    await page.page.evaluate(
      ([base, token, later]) => {
        window.renewals = [];
        window.freshToken = later;
        const open = (name, url) => {
          window.openSource(name, url);
          window.sources[name].source.addEventListener('connection:closing', (e) => {
            const { reason, reconnect, lastEventId } = JSON.parse(e.data).payload;
            window.sources[name].source.close();
            window.renewals.push({ reason, reconnect, lastEventId });
            if (reconnect) {
              const q = new URLSearchParams({ topic: 'demo:expiry', access_token: window.freshToken, lastEventId });
              open(`${name}+`, `${base}/v1/events?${q}`);
            }
          });
        };
        open('s', `${base}/v1/events?${new URLSearchParams({ topic: 'demo:expiry', access_token: token })}`);
      },
      [server.url, short, fresh],
    );
    await page.waitEvents('s', 'connection:established', 1);
    const sent = [];
    for (const n of [1, 2]) sent.push(await publish(server, fresh, 'demo:expiry', { n }));
    await page.waitEvents('s', 'demo:said', 2);
    const closing = await page.waitEvents('s', 'connection:closing', 1);
    const notice = JSON.parse(closing[0].data).payload;
    assert.equal(notice.reason, 'token_expired');
    assert.equal(notice.reconnect, true);
    assert.equal(notice.lastEventId, sent[1].id, 'resume from the last event the stream sent');
    // Published while the page gets its new token.
    for (const n of [3, 4]) sent.push(await publish(server, fresh, 'demo:expiry', { n }));
    await page.waitEvents('s+', 'connection:reconnected', 1);
    await page.waitEvents('s+', 'demo:said', 2);
    sent.push(await publish(server, fresh, 'demo:expiry', { n: 5 }));
    await page.waitEvents('s+', 'demo:said', 3);
    const received = [...(await page.events('s', 'demo:said')), ...(await page.events('s+', 'demo:said'))];
    assert.deepEqual(received.map((e) => e.lastEventId), sent.map((e) => e.id), 'every event once, in order');
    // Without the page's handling, the expired token is refused for good.
    const refused = await server.request('GET', streamPath('demo:expiry', short));
    assert.equal(refused.status, 401);
    assert.equal(refused.body.error.code, 'token_expired');
  } finally {
    await page?.dispose();
    await stopServer(server);
  }
});

test('format-field-retry: the browser waits the `retry:` pollcast sends before reconnecting', { timeout: TEST_TIMEOUT }, async (t) => {
  async function reconnectDelay(retry) {
    const server = await new Pollcast({ store: 'memory', args: ['--retry', retry] }).start();
    let page;
    try {
      const token = demoToken(server);
      page = await Page.open(browser.context, `${server.url}/healthz`);
      const path = streamPath('demo:retry', token);
      await page.source('s', server.url + path);
      await page.waitEvents('s', 'connection:established', 1);
      await server.restart();
      await page.waitEvents('s', 'connection:established', 2);
      const log = await page.log('s');
      const dropped = log.find((e) => e.kind === 'error').at;
      const requests = await page.requestsTo(server.url + path);
      assert.ok(requests.length >= 2);
      return requests[1].at - dropped;
    } finally {
      await page?.dispose();
      await stopServer(server);
    }
  }
  const [short, long] = await Promise.all([reconnectDelay('300ms'), reconnectDelay('3s')]);
  t.diagnostic(`reconnect delay: ${short} ms with --retry 300ms, ${long} ms with --retry 3s`);
  assert.ok(short >= 200 && short < 1500, `retry 300 ms: reconnected after ${short} ms`);
  assert.ok(long >= 2700 && long < 6000, `retry 3 s: reconnected after ${long} ms`);
  assert.ok(long - short > 2000, `${long} ms vs ${short} ms`);
});

test('eventsource-onmessage-lastEventId: id-less frames and heartbeats keep the last stored id', { timeout: TEST_TIMEOUT }, async () => {
  const server = await new Pollcast({
    store: 'memory',
    args: ['--retry', '300ms', '--heartbeat', '200ms', '--status-interval', '300ms'],
  }).start();
  const tap = await new Tap(server).start();
  let page;
  try {
    const token = mintToken(server.secret, {
      sub: 'browser',
      publish: ['demo:*'],
      subscribe: ['demo:*', 'system'],
    });
    page = await Page.open(browser.context, `${tap.url}/healthz`);
    await page.source('s', `${tap.url}${streamPath('demo:ids', token)}&topic=system`);
    const [established] = await page.waitEvents('s', 'connection:established', 1);
    assert.equal(established.lastEventId, '', 'no id before any stored event');
    const { connectionId } = JSON.parse(established.data).payload;

    const one = await publish(server, token, 'demo:ids', { n: 1 });
    const two = await publish(server, token, 'demo:ids', { n: 2 });
    const events = await page.waitEvents('s', 'demo:said', 2);
    assert.deepEqual(events.map((e) => e.lastEventId), [one.id, two.id]);

    // Id-less frames after the last stored event: a room join's
    // system:subscribed, the node's system:status, and heartbeats.
    const joined = await server.request('POST', `/v1/connections/${connectionId}/topics`, {
      token,
      body: { topic: 'demo:room' },
    });
    assert.equal(joined.status, 200, JSON.stringify(joined.body));
    const [subscribed] = await page.waitEvents('s', 'system:subscribed', 1);
    assert.equal(subscribed.lastEventId, two.id, 'system:subscribed keeps lastEventId');
    const afterTwo = events.at(-1).at;
    const statuses = await until('a system:status after the last event', async () => {
      const all = await page.events('s', 'system:status');
      const later = all.filter((e) => e.at > afterTwo);
      return later.length ? later : null;
    });
    for (const status of statuses) assert.equal(status.lastEventId, two.id, 'system:status keeps lastEventId');
    const [first] = tap.streams;
    await until('three pings after the last event', () => {
      const tail = first.text.slice(first.text.lastIndexOf(`id: ${two.id}\n`));
      return tail.split(': ping\n').length > 3;
    });
    const tail = first.text.slice(first.text.indexOf(`id: ${two.id}\n`) + 1);
    assert.doesNotMatch(tail, /^id:/m, 'nothing after the last event carries an id');

    // The stream drops: the reconnect still names the last stored id.
    tap.drop();
    const [reconnected] = await page.waitEvents('s', 'connection:reconnected', 1);
    assert.equal(reconnected.lastEventId, two.id, 'a frame without id: keeps lastEventId');
    assert.equal(JSON.parse(reconnected.data).payload.replayCount, 0);
    const reconnect = tap.streamRequests().at(-1);
    assert.equal(reconnect.headers['last-event-id'], two.id);
    assert.equal(reconnect.status, 200);
    assert.match(reconnect.stream.text, /^retry: 300\n/);
    assert.doesNotMatch(reconnect.stream.text.split('\n\n')[0], /^id:/m, 'connection:* frames carry no id');

    await sleep(500); // more pings and statuses on the new stream
    const three = await publish(server, token, 'demo:ids', { n: 3 });
    const later = await page.waitEvents('s', 'demo:said', 3);
    assert.equal(later.at(-1).lastEventId, three.id);
    assert.deepEqual((await page.log('s')).filter((e) => e.kind === 'message'), [], 'named events never reach onmessage');
  } finally {
    await page?.dispose();
    await tap.close();
    await stopServer(server);
  }
});

test('format-utf-8: payloads arrive intact, under their pollcast event type, live and replayed', { timeout: TEST_TIMEOUT }, async () => {
  const server = await new Pollcast().start();
  let page;
  try {
    const token = demoToken(server);
    page = await Page.open(browser.context, `${server.url}/healthz`);
    const payload = {
      lines: 'one\ntwo\r\nthree\rfour\n\n',
      leading: '   three leading spaces',
      spaceOnly: ' ',
      forged: 'data: forged\n\nid: 999\nevent: demo:forged\nretry: 1\n\n',
      separators: 'a\u2028b\u2029c\u0085d',
      emoji: '😀 👍🏽 👨‍👩‍👧',
      bom: '\uFEFFbom',
      controls: '\t\u0001\u001f\u007f',
      scripts: 'héllo wörld 日本語 العربية',
      'key\nwith\r\nbreaks': ['\r', '\n', ' x '],
      nested: { deep: [{ s: ': not a comment\r\n' }] },
    };
    const topic = 'demo:utf8';
    // The one character refused: NUL, which Postgres cannot hold in text or
    // jsonb (and which would break any query of the payload's fields).
    const nul = await server.request('POST', `/v1/topics/${topic}/events`, {
      token,
      body: { type: 'demo:utf-8', payload: { nul: 'before\u0000after' } },
    });
    assert.equal(nul.status, 422, JSON.stringify(nul.body));
    assert.match(nul.body.error.message, /^payload\.nul: .*NUL/);
    await page.source('live', server.url + streamPath(topic, token));
    await page.waitEvents('live', 'connection:established', 1);
    const published = await publish(server, token, topic, payload, 'demo:utf-8');
    assert.deepEqual(published.payload, payload, 'the 201 echoes the payload');
    const [live] = await page.waitEvents('live', 'demo:utf-8', 1);

    // The same event replayed from Postgres.
    const previous = String(BigInt(published.id) - 1n);
    await page.source('replay', server.url + streamPath(topic, token, `&lastEventId=${previous}`));
    const [replayed] = await page.waitEvents('replay', 'demo:utf-8', 1);

    for (const [name, event] of [['live', live], ['replayed', replayed]]) {
      assert.equal(event.type, 'demo:utf-8', `${name}: event.type is the pollcast type`);
      assert.equal(event.lastEventId, published.id, name);
      const envelope = JSON.parse(event.data);
      assert.deepEqual(envelope.payload, payload, `${name}: payload intact`);
      assert.equal(envelope.type, 'demo:utf-8');
      assert.equal(envelope.id, published.id);
    }
    for (const name of ['live', 'replay']) {
      assert.equal(stored(await page.events(name)).length, 1, `${name}: nothing forged from the payload`);
    }
    // What Chromium got: the stream headers of CONTRACT §3, uncompressed
    // although it offered gzip, br and zstd.
    const [request] = await page.requestsTo(server.url + streamPath(topic, token));
    assert.match(request.headers['accept'], /text\/event-stream/);
    assert.match(request.headers['accept-encoding'], /gzip/);
    assert.equal(request.responseHeaders['content-type'], 'text/event-stream');
    assert.equal(request.responseHeaders['cache-control'], 'no-cache');
    assert.equal(request.responseHeaders['x-accel-buffering'], 'no');
    assert.equal(request.responseHeaders['content-encoding'], undefined);
    for (const name of ['live', 'replay']) {
      const log = await page.log(name);
      assert.deepEqual(log.filter((e) => e.kind === 'message'), [], `${name}: nothing reached onmessage`);
      assert.ok(!log.some((e) => e.kind === 'error'), `${name}: no error`);
    }
  } finally {
    await page?.dispose();
    await stopServer(server);
  }
});

describe('CORS (pollcast started with --cors-origin <the test page origin>)', () => {
  let allowed;
  let refused;
  let server;
  let token;
  before(async () => {
    allowed = await pageServer();
    refused = await pageServer();
    server = await new Pollcast({ args: ['--cors-origin', allowed.origin, '--retry', '300ms'] }).start();
    token = demoToken(server);
  });
  after(async () => {
    await (server && stopServer(server));
    await allowed?.close();
    await refused?.close();
  });

  /** Records every request Chromium makes, preflights included (CDP). */
  async function watchNetwork(page) {
    const seen = [];
    const cdp = await browser.context.newCDPSession(page.page);
    await cdp.send('Network.enable');
    cdp.on('Network.requestWillBeSent', (e) =>
      seen.push({ method: e.request.method, url: e.request.url, initiator: e.initiator?.type }),
    );
    return seen;
  }

  test('eventsource-cross-origin: a cross-origin EventSource streams and reconnects', { timeout: TEST_TIMEOUT }, async () => {
    const page = await Page.open(browser.context, `${allowed.origin}/`);
    try {
      const network = await watchNetwork(page);
      const path = streamPath('demo:cors', token);
      const created = await page.source('s', server.url + path);
      assert.equal(created.withCredentials, false);
      await page.waitEvents('s', 'connection:established', 1);
      const one = await publish(server, token, 'demo:cors', { n: 1 });
      await page.waitEvents('s', 'demo:said', 1);

      await server.restart();
      const [reconnected] = await page.waitEvents('s', 'connection:reconnected', 1);
      assert.equal(JSON.parse(reconnected.data).payload.replayFrom, one.id);
      const two = await publish(server, token, 'demo:cors', { n: 2 });
      const events = await page.waitEvents('s', 'demo:said', 2);
      assert.deepEqual(events.map((e) => e.lastEventId), [one.id, two.id]);

      const requests = await page.requestsTo(server.url + path);
      for (const r of requests) {
        assert.equal(r.headers.origin, allowed.origin);
        if (r.status !== undefined) {
          assert.equal(r.status, 200);
          assert.equal(r.responseHeaders['access-control-allow-origin'], allowed.origin);
          assert.equal(r.responseHeaders['access-control-allow-credentials'], undefined);
        }
      }
      const reconnect = requests.filter((r) => r.status === 200).at(-1);
      assert.equal(reconnect.headers['last-event-id'], one.id);
      // A short numeric Last-Event-ID is CORS-safelisted: no preflight.
      const preflights = network.filter((r) => r.method === 'OPTIONS');
      assert.deepEqual(preflights, [], 'no preflight for a numeric Last-Event-ID');
    } finally {
      await page.dispose();
    }
  });

  /** What a correct answer to a preflight for `Last-Event-ID` looks like. */
  function assertPreflightAllowed(p) {
    assert.equal(p.headers['access-control-request-headers'], 'last-event-id');
    assert.equal(p.headers['access-control-request-method'], 'GET');
    assert.equal(p.headers.origin, allowed.origin);
    assert.ok(p.status >= 200 && p.status < 300, `preflight answered ${p.status}`);
    assert.equal(p.responseHeaders['access-control-allow-origin'], allowed.origin);
    assert.match(p.responseHeaders['access-control-allow-headers'], /(^|,\s*)last-event-id(\s*,|$)/i);
    assert.match(p.responseHeaders['access-control-allow-methods'], /\bGET\b/);
  }

  test('eventsource-cross-origin-preflight: an unsafe or long Last-Event-ID still reconnects', { timeout: TEST_TIMEOUT }, async (t) => {
    const tap = await new Tap(server).start();
    const page = await Page.open(browser.context, `${allowed.origin}/`);
    try {
      const network = await watchNetwork(page);
      await page.source('s', tap.url + streamPath('demo:preflight', token));
      await page.waitEvents('s', 'connection:established', 1);
      const cases = [
        ['unsafe characters', 'not<an>id'],
        ['longer than 128 bytes', '7'.repeat(200)],
      ];
      for (const [index, [what, id]] of cases.entries()) {
        tap.inject(`id: ${id}\n\n`);
        await sleep(200);
        tap.drop();
        const resets = await page.waitEvents('s', 'connection:reset', index + 1);
        const info = JSON.parse(resets.at(-1).data).payload;
        assert.equal(info.reason, 'malformed', what);
        assert.equal(resets.at(-1).lastEventId, id, what);
        const reconnect = tap.streamRequests().at(-1);
        assert.equal(reconnect.headers['last-event-id'], id, `${what}: the reconnect carries it`);
        assert.equal(reconnect.status, 200, what);
        assert.equal(reconnect.responseHeaders['access-control-allow-origin'], allowed.origin, what);
      }
      assert.equal(await page.readyState('s'), 1);
      // The spec would preflight these; Chromium's EventSource does not
      // (seen with Chromium 156). Whatever it sends must be let through.
      const preflights = tap.requests.filter((r) => r.method === 'OPTIONS');
      t.diagnostic(`EventSource reconnects preflighted by Chromium: ${preflights.length}`);
      preflights.forEach(assertPreflightAllowed);
      assert.equal(network.filter((r) => r.method === 'OPTIONS').length, preflights.length);

      // A fetch-based SSE client sending Last-Event-ID is preflighted by
      // Chromium (the header is safelisted for EventSource only): pollcast's
      // answer must let the stream through.
      const sent = tap.requests.length;
      const fetched = await page.page.evaluate(async (url) => {
        const abort = new AbortController();
        const res = await fetch(url, { headers: { 'last-event-id': 'not<an>id' }, signal: abort.signal });
        const reader = res.body.getReader();
        let text = '';
        while (!text.includes('\n\n')) {
          const { value, done } = await reader.read();
          if (done) break;
          text += new TextDecoder().decode(value);
        }
        abort.abort();
        return { status: res.status, type: res.headers.get('content-type'), text };
      }, tap.url + streamPath('demo:preflight-fetch', token));
      assert.equal(fetched.status, 200);
      assert.equal(fetched.type, 'text/event-stream');
      assert.match(fetched.text, /^retry: 300\nevent: connection:reset\ndata: .*"reason":"malformed"/);
      const [preflight, ...rest] = tap.requests.slice(sent);
      assert.equal(preflight?.method, 'OPTIONS', 'the fetch was preflighted');
      assertPreflightAllowed(preflight);
      assert.equal(rest[0].method, 'GET');
      assert.equal(rest[0].headers['last-event-id'], 'not<an>id');
    } finally {
      await page.dispose();
      await tap.close();
    }
  });

  test('cross-origin publish: fetch POST with Authorization is preflighted and allowed', { timeout: TEST_TIMEOUT }, async () => {
    const page = await Page.open(browser.context, `${allowed.origin}/`);
    try {
      const network = await watchNetwork(page);
      await page.source('s', server.url + streamPath('demo:post', token));
      await page.waitEvents('s', 'connection:established', 1);
      const answer = await page.page.evaluate(async ([url, bearer]) => {
        const res = await fetch(url, {
          method: 'POST',
          headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
          body: JSON.stringify({ type: 'demo:said', payload: { from: 'page' } }),
        });
        return { status: res.status, body: await res.json(), traceId: res.headers.get('x-trace-id') };
      }, [`${server.url}/v1/topics/demo:post/events`, token]);
      assert.equal(answer.status, 201);
      assert.deepEqual(answer.body.payload, { from: 'page' });
      assert.equal(answer.traceId, answer.body.traceId, 'x-trace-id is exposed and is the event\'s traceId');
      const [event] = await page.waitEvents('s', 'demo:said', 1);
      assert.equal(event.lastEventId, answer.body.id);
      assert.ok(
        network.some((r) => r.method === 'OPTIONS' && r.url.endsWith('/v1/topics/demo:post/events')),
        'the POST was preflighted',
      );
    } finally {
      await page.dispose();
    }
  });

  test('request-credentials: withCredentials is refused (pollcast authenticates by token, not cookies)', { timeout: TEST_TIMEOUT }, async () => {
    // pollcast never sends Access-Control-Allow-Credentials, so a
    // credentialed cross-origin EventSource fails at once and for good.
    const page = await Page.open(browser.context, `${allowed.origin}/`);
    try {
      const path = streamPath('demo:credentials', token);
      const created = await page.source('s', server.url + path, { withCredentials: true });
      assert.equal(created.withCredentials, true);
      await until('the source to close', async () => (await page.readyState('s')) === 2);
      await sleep(1000);
      assert.deepEqual((await page.log('s')).map((e) => [e.kind, e.readyState]), [['error', 2]]);
      const requests = await page.requestsTo(server.url + path);
      assert.equal(requests.length, 1);
      assert.equal(requests[0].responseHeaders?.['access-control-allow-credentials'], undefined);
    } finally {
      await page.dispose();
    }
  });

  test('eventsource-cross-origin: an origin not in --cors-origin is refused by the browser', { timeout: TEST_TIMEOUT }, async () => {
    const page = await Page.open(browser.context, `${refused.origin}/`);
    try {
      const path = streamPath('demo:refused', token);
      await page.source('s', server.url + path);
      await until('the source to fail', async () => (await page.log('s')).some((e) => e.kind === 'error'));
      const publishError = await page.page.evaluate(async ([url, bearer]) => {
        try {
          await fetch(url, {
            method: 'POST',
            headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
            body: JSON.stringify({ type: 'demo:said', payload: { from: 'refused' } }),
          });
          return null;
        } catch (error) {
          return error.name;
        }
      }, [`${server.url}/v1/topics/demo:refused/events`, token]);
      assert.equal(publishError, 'TypeError', 'the cross-origin POST is blocked');
      await sleep(1500);
      const log = await page.log('s');
      assert.deepEqual(log.filter((e) => e.kind !== 'error'), [], 'no open, no events');
      assert.equal(await page.readyState('s'), 2, 'CLOSED');
      const requests = await page.requestsTo(server.url + path);
      assert.equal(requests.length, 1, 'no reconnect after a CORS failure');
      assert.equal(requests[0].responseHeaders?.['access-control-allow-origin'], undefined);
      const history = await server.request('GET', '/v1/events/history?topic=demo:refused', { token });
      assert.deepEqual(history.body, [], 'the blocked POST published nothing (its preflight failed)');
    } finally {
      await page.dispose();
    }
  });
});
