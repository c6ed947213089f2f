// End-to-end test of the admin console, /admin, in Chromium: a pollcast
// with --admin-key on Postgres, driven from the page and from REST, every
// assertion read from the page itself.
//
//   cd tests/browser && POLLCAST_BIN=/path/to/pollcast node --test --test-concurrency=1 admin.test.mjs
//
// Needs Postgres (POLLCAST_TEST_PG) and Chromium (CHROMIUM). Writes
// admin-console.png (1366×768) and admin-console-phone.png (390×844) to
// target/screenshots, and the desktop one to docs/ with UPDATE_SCREENSHOTS=1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Pollcast, repoRoot, mintToken } from './lib/server.mjs';
import { launchChromium } from './lib/browser.mjs';
import { eventually, sleep } from './lib/wait.mjs';

const binary = process.env.POLLCAST_BIN ?? path.join(repoRoot, 'target/release/pollcast');
const screenshots = path.join(repoRoot, 'target', 'screenshots');
mkdirSync(screenshots, { recursive: true });

const SHOW = 20_000;
const TEST_TIMEOUT = 240_000;
const LAPTOP = { width: 1366, height: 768 };
const PHONE = { width: 390, height: 844 };
const ADMIN_KEY = randomBytes(18).toString('hex');

let browser;
let server;

before(async () => {
  browser = await launchChromium();
  server = await new Pollcast({ args: ['--admin-key', ADMIN_KEY] }).start();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A tenant's token, minted as a backend would (`pollcast token --tenant`). */
function tenantToken(tenant, publish) {
  return execFileSync(binary, ['token', '--token-secret', server.secret, '--ttl', '1h', '--tenant', tenant, '--publish', publish], { encoding: 'utf8' }).trim();
}

async function publishRest(token, topic, type, payload) {
  const res = await server.request('POST', `/v1/topics/${topic}/events`, { token, body: { type, payload } });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  return res.body;
}

/** An SSE stream held open from the test (Node's fetch), as any client would. */
async function openStream(token, topic) {
  const controller = new AbortController();
  const res = await fetch(`${server.url}/v1/events?topic=${encodeURIComponent(topic)}`, {
    headers: { authorization: `Bearer ${token}` },
    signal: controller.signal,
  });
  assert.equal(res.status, 200);
  const reader = res.body.getReader();
  await reader.read(); // the first frame: the stream is open
  return () => controller.abort();
}

async function openConsole(viewport = LAPTOP) {
  const page = await browser.context.newPage();
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(error.message));
  await page.setViewportSize(viewport);
  await page.goto(`${server.url}/admin`);
  return page;
}

async function signIn(page, key) {
  await page.getByTestId('admin-key').fill(key);
  await page.getByTestId('login-submit').click();
}

/** The tail's events as shown: [{id, topic, type, tenant}], newest first. */
const tailEvents = (page) =>
  page.getByTestId('tail').evaluate((list) =>
    [...list.querySelectorAll('[data-testid="tail-event"]')].map((li) => ({ ...li.dataset })));

async function seeInTail(page, predicate, what) {
  return eventually(async () => {
    const found = (await tailEvents(page)).find(predicate);
    assert.ok(found, `${what} is not in the tail`);
    return found;
  });
}

test('a wrong admin key is refused with a clear message, and nothing opens', { timeout: TEST_TIMEOUT }, async () => {
  const page = await openConsole();
  await signIn(page, 'not-the-key');
  const error = page.getByTestId('login-error');
  await eventually(async () => assert.match(await error.textContent(), /not the server’s/));
  assert.equal(await page.getByTestId('console').isVisible(), false);
  assert.equal(await page.evaluate(() => sessionStorage.length + localStorage.length), 0, 'a refused key is not kept');
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('the console shows this node, streams per topic, and a live tail of every event', { timeout: TEST_TIMEOUT }, async () => {
  const page = await openConsole();
  await signIn(page, ADMIN_KEY);
  await page.getByTestId('console').waitFor({ state: 'visible' });

  // Kept for this tab only, and never in a URL.
  const stored = await page.evaluate(() => ({ session: sessionStorage.getItem('pollcast.adminKey'), local: localStorage.length }));
  assert.deepEqual(stored, { session: ADMIN_KEY, local: 0 });
  assert.ok(!page.url().includes(ADMIN_KEY));

  // Nodes: this node, as the API names it.
  const nodes = await server.request('GET', '/v1/admin/nodes', { headers: { 'x-admin-key': ADMIN_KEY } });
  const thisNode = nodes.body.thisNode;
  await eventually(async () => {
    const row = page.locator(`[data-testid="node-row"][data-node-id="${thisNode}"]`);
    assert.equal(await row.getAttribute('data-this-node'), 'true');
    assert.match(await row.textContent(), /this node/);
  });

  // A stream opened from outside shows up on its topic, and leaves.
  const subscriber = mintToken(server.secret, { subscribe: ['watch:*'] });
  const close = await openStream(subscriber, 'watch:room1');
  const row = page.locator('[data-testid="topic-row"][data-selector="watch:room1"]');
  await eventually(async () => assert.equal(await row.getByTestId('topic-streams').textContent(), '1'));
  const second = await openStream(subscriber, 'watch:room1');
  await eventually(async () => assert.equal(await row.getByTestId('topic-streams').textContent(), '2'));
  close();
  second();
  await eventually(async () => assert.equal(await row.count(), 0));

  // The tail is live: an event from the form, and one from REST.
  await eventually(async () => assert.equal(await page.getByTestId('connection-status').textContent(), 'tail live'));
  await page.getByTestId('publish-topic').fill('demo:form');
  await page.getByTestId('publish-type').fill('admin:test');
  await page.getByTestId('publish-payload').fill('{"from":"the form"}');
  await page.getByTestId('publish-submit').click();
  await eventually(async () => assert.match(await page.getByTestId('publish-result').textContent(), /Published #\d+ on demo:form/));
  await seeInTail(page, (e) => e.topic === 'demo:form' && e.type === 'admin:test', 'the form’s event');

  const publisher = mintToken(server.secret, { publish: ['demo:*', 'other:*'] });
  const rest = await publishRest(publisher, 'demo:rest', 'demo:said', { text: 'from curl' });
  const shown = await seeInTail(page, (e) => e.topic === 'demo:rest', 'the REST event');
  assert.equal(shown.id, rest.id);

  // A reserved topic is refused from the form as from any publisher.
  await page.getByTestId('publish-topic').fill('session:x');
  await page.getByTestId('publish-submit').click();
  await eventually(async () => assert.match(await page.getByTestId('publish-result').textContent(), /reserved|live polling/i));

  // A tenant's event: every tenant is visible to the admin, with its name.
  const acme = tenantToken('acme', 'orders:*');
  const tenantEvent = await publishRest(acme, 'orders:1', 'order:updated', { status: 'paid' });
  const seen = await seeInTail(page, (e) => e.id === tenantEvent.id, 'the tenant’s event');
  assert.deepEqual([seen.topic, seen.tenant], ['orders:1', 'acme']);

  // The filter: only demo:* from now on.
  await page.getByTestId('tail-topics').fill('demo:*');
  await page.getByTestId('tail-apply').click();
  await eventually(async () => assert.equal(await page.getByTestId('connection-status').textContent(), 'tail live'));
  await sleep(300);
  const hidden = await publishRest(publisher, 'other:x', 'demo:said', { text: 'not for this filter' });
  const kept = await publishRest(publisher, 'demo:after', 'demo:said', { text: 'after the filter' });
  await seeInTail(page, (e) => e.id === kept.id, 'the matching event');
  assert.ok(!(await tailEvents(page)).some((e) => e.id === hidden.id), 'the filter hides other:x');

  // A reload keeps the key (same tab) and the console opens again.
  await page.reload();
  await page.getByTestId('console').waitFor({ state: 'visible' });

  // Webhooks: one whose receiver refuses connections shows up with its
  // cursor, its lag and the error that holds it back.
  const created = await fetch(`${server.url}/v1/webhooks`, {
    method: 'POST',
    headers: { 'X-Admin-Key': ADMIN_KEY, 'Content-Type': 'application/json' },
    body: JSON.stringify({ url: 'http://127.0.0.1:9/hook', topics: ['hooked:*'], description: 'a receiver that is down' }),
  });
  assert.equal(created.status, 201);
  const webhook = await created.json();
  await publishRest(mintToken(server.secret, { publish: ['hooked:*'] }), 'hooked:1', 'demo:said', { text: 'for the hook' });
  await eventually(async () => {
    const row = page.locator(`[data-testid="webhook-row"][data-webhook-id="${webhook.id}"]`);
    assert.ok(await row.isVisible(), 'the webhook is listed');
    const text = await row.textContent();
    assert.match(text, /http:\/\/127\.0\.0\.1:9\/hook/);
    assert.match(text, /a receiver that is down/);
    assert.match(await row.getAttribute('data-status'), /retrying|failing/);
    assert.equal((await row.getByTestId('webhook-lag').textContent()).trim(), '1');
    assert.match(text, /connect|refused/i, 'the last error is shown');
  }, 15_000);

  // Sign out forgets the key.
  await page.getByTestId('sign-out').click();
  await page.getByTestId('login').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('pollcast.adminKey')), null);
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('the console fits a laptop and a phone (screenshots)', { timeout: TEST_TIMEOUT }, async () => {
  const publisher = mintToken(server.secret, { publish: ['demo:*', 'orders:*'], subscribe: ['demo:*'] });
  const closers = [
    await openStream(publisher, 'demo:lobby'),
    await openStream(publisher, 'demo:lobby'),
    await openStream(publisher, 'demo:*'),
  ];
  // Two webhooks: one whose receiver answers, one whose receiver is down.
  const receiver = http.createServer((request, response) => {
    request.resume();
    request.on('end', () => response.writeHead(204).end());
  });
  await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  const hooks = [
    { url: `http://127.0.0.1:${receiver.address().port}/pollcast`, topics: ['demo:*'], description: 'search indexer' },
    { url: 'http://127.0.0.1:9/billing', topics: ['orders:*'], description: 'billing (receiver down)' },
  ];
  for (const hook of hooks) {
    const created = await fetch(`${server.url}/v1/webhooks`, {
      method: 'POST',
      headers: { 'X-Admin-Key': ADMIN_KEY, 'Content-Type': 'application/json' },
      body: JSON.stringify(hook),
    });
    assert.equal(created.status, 201);
  }
  for (const [viewport, file] of [[LAPTOP, 'admin-console.png'], [PHONE, 'admin-console-phone.png']]) {
    const page = await openConsole(viewport);
    await signIn(page, ADMIN_KEY);
    await page.getByTestId('console').waitFor({ state: 'visible' });
    await eventually(async () => assert.equal(await page.getByTestId('connection-status').textContent(), 'tail live'));
    await publishRest(publisher, 'demo:lobby', 'demo:said', { text: 'hello' });
    await publishRest(publisher, 'orders:42', 'order:updated', { status: 'paid', total: 129.5 });
    await publishRest(tenantToken('acme', 'orders:*'), 'orders:7', 'order:created', { items: 3 });
    await page.getByTestId('publish-topic').fill('demo:lobby');
    await page.getByTestId('publish-submit').click();
    await eventually(async () => assert.ok((await tailEvents(page)).length >= 4));
    await eventually(async () => assert.ok((await page.getByTestId('topic-row').count()) >= 2));
    await eventually(async () => {
      const rows = page.getByTestId('webhook-row');
      assert.ok((await rows.count()) >= 2);
      const states = await rows.evaluateAll((all) => Object.fromEntries(
        all.map((row) => [row.textContent.includes('billing') ? 'billing' : row.textContent.includes('search indexer') ? 'indexer' : 'other', row.dataset.status])));
      assert.match(states.billing ?? '', /retrying|failing/, JSON.stringify(states));
      assert.equal(states.indexer, 'active', JSON.stringify(states));
    }, 15_000);
    // Nothing sticks out sideways.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than the window`);
    await page.screenshot({ path: path.join(screenshots, file) });
    if (process.env.UPDATE_SCREENSHOTS) {
      await page.screenshot({ path: path.join(repoRoot, 'docs', file) });
    }
    assert.deepEqual(page.errors, []);
    await page.close();
  }
  for (const close of closers) close();
  receiver.close();
});
