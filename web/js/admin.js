// The admin console (/admin): nodes, open streams per topic, webhooks, a
// test publish and a live tail of every event, all with the admin key.
//
// The key is kept in sessionStorage, not localStorage: it opens everything
// (every tenant's events, revocations, closing streams), so it should not
// outlive the tab, nor be handed to every other tab and every later visit
// of this origin on a shared machine the way localStorage would. Reloading
// the page keeps it; closing the tab or "Sign out" forgets it. It is sent
// only as the X-Admin-Key header (never in a URL), including for the live
// tail (see admin-sse.js).
import { h, setText, show, $ } from './dom.js';
import { followTail } from './admin-sse.js';

const KEY = 'pollcast.adminKey';
const REFRESH_MS = 3000;
const TAIL_MAX = 200;

const el = {
  login: $('[data-testid="login"]'),
  loginForm: $('[data-testid="login-form"]'),
  loginError: $('[data-testid="login-error"]'),
  console: $('[data-testid="console"]'),
  signOut: $('[data-testid="sign-out"]'),
  status: $('[data-testid="connection-status"]'),
  nodes: $('[data-testid="nodes"] tbody'),
  nodesNote: $('[data-testid="nodes-note"]'),
  topics: $('[data-testid="topics"] tbody'),
  topicsNote: $('[data-testid="topics-note"]'),
  webhooks: $('[data-testid="webhooks"]'),
  webhooksNote: $('[data-testid="webhooks-note"]'),
  publishForm: $('[data-testid="publish-form"]'),
  publishResult: $('[data-testid="publish-result"]'),
  tailFilter: $('[data-testid="tail-filter"]'),
  tailError: $('[data-testid="tail-error"]'),
  tailCount: $('[data-testid="tail-count"]'),
  tail: $('[data-testid="tail"]'),
};

let adminKey = null;
let timer = null;
let tailAbort = null;

/** Thrown for a non-2xx answer, with the contract's error body when there is one. */
class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(method, path, body) {
  const headers = { 'x-admin-key': adminKey, accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  } catch {
    throw new HttpError(0, 'The server cannot be reached.');
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!response.ok) throw new HttpError(response.status, data?.error?.message ?? `HTTP ${response.status}`);
  return data;
}

/** What a refused key means, in words. */
function keyProblem(error) {
  if (error.status === 401) return 'That admin key is not the server’s: check it and try again.';
  if (error.status === 403) return 'The admin API is off on this server: start it with --admin-key.';
  return error.message;
}

// ------------------------------------------------------------------ login --

function showLogin(message) {
  stop();
  adminKey = null;
  sessionStorage.removeItem(KEY);
  show(el.console, false);
  show(el.signOut, false);
  show(el.status, false);
  show(el.login, true);
  setText(el.loginError, message ?? '');
  show(el.loginError, Boolean(message));
  el.loginForm.key.focus();
}

async function open(key) {
  adminKey = key;
  try {
    const nodes = await call('GET', '/v1/admin/nodes');
    sessionStorage.setItem(KEY, key);
    show(el.login, false);
    show(el.console, true);
    show(el.signOut, true);
    show(el.status, true);
    renderNodes(nodes);
    refresh();
    timer = setInterval(refresh, REFRESH_MS);
    startTail();
  } catch (error) {
    showLogin(keyProblem(error));
  }
}

function stop() {
  clearInterval(timer);
  timer = null;
  tailAbort?.abort();
  tailAbort = null;
}

el.loginForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const key = el.loginForm.key.value;
  if (!key) {
    setText(el.loginError, 'Enter the admin key.');
    show(el.loginError, true);
    return;
  }
  el.loginForm.key.value = '';
  open(key);
});

el.signOut.addEventListener('click', () => showLogin());

// ---------------------------------------------------------------- panels --

function ago(timestamp) {
  if (!timestamp) return '—';
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(timestamp)) / 1000));
  return seconds < 90 ? `${seconds} s ago` : `${Math.round(seconds / 60)} min ago`;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function renderNodes(answer) {
  el.nodes.replaceChildren(
    ...answer.nodes.map((node) =>
      h('tr', { testid: 'node-row', dataset: { nodeId: node.nodeId, thisNode: String(node.thisNode) } },
        h('td', { class: 'wrap' },
          h('code', { title: node.nodeId }, node.nodeId.slice(0, 8)),
          node.thisNode ? h('span', { class: 'pill', dataset: { state: 'active' } }, 'this node') : null,
          node.answered ? null : h('span', { class: 'pill', dataset: { state: 'silent' }, title: 'Known by its heartbeat only: it did not answer in time' }, 'silent'),
          node.version ? h('div', { class: 'muted small' }, `v${node.version} · ${node.store}`) : null),
        h('td', {}, node.lastHeartbeat ? ago(node.lastHeartbeat) : (node.store === 'memory' ? 'one node' : '—')),
        h('td', { class: 'num', testid: 'node-streams' }, node.streams ?? '—'),
        h('td', {}, duration(node.uptimeSeconds)))),
  );
  const n = answer.nodes.length;
  setText(el.nodesNote, `${n} node${n === 1 ? '' : 's'}${answer.complete ? '' : ' · some did not answer'}`);
}

function renderTopics(answer) {
  const rows = answer.topics.map((t) =>
    h('tr', { testid: 'topic-row', dataset: { selector: t.selector ?? '', tenant: t.tenant ?? '' } },
      h('td', {}, t.selector === null ? h('em', {}, 'every topic (a tail)') : h('code', {}, t.selector)),
      h('td', {}, t.tenant ?? ''),
      h('td', { class: 'num', testid: 'topic-streams' }, t.streams)));
  if (rows.length === 0) rows.push(h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'No open streams.')));
  el.topics.replaceChildren(...rows);
  const more = answer.otherSelectors ? ` · ${answer.otherSelectors} more not listed` : '';
  setText(el.topicsNote, `${answer.streams} open stream${answer.streams === 1 ? '' : 's'}${more}`);
}

function renderWebhooks(answer) {
  const body = el.webhooks.tBodies[0];
  const rows = answer.webhooks.map((w) =>
    h('tr', { testid: 'webhook-row', dataset: { webhookId: w.id, status: w.status } },
      h('td', { class: 'wrap' }, h('code', {}, w.url), w.description ? h('div', { class: 'muted small' }, w.description) : null,
        h('div', { class: 'muted small' }, (w.tenant ? `${w.tenant}: ` : '') + (w.topics ?? []).join(' '))),
      h('td', {}, h('span', { class: 'pill', dataset: { state: w.status } }, w.status)),
      h('td', { class: 'num' }, w.cursor ?? '—'),
      h('td', { class: 'num', testid: 'webhook-lag' }, w.lag ?? '—'),
      h('td', { class: 'wrap' }, w.lastError
        ? [h('span', { class: 'error-text' }, w.lastError.message), h('div', { class: 'muted small' }, ago(w.lastError.at))]
        : h('span', { class: 'muted' }, 'none'))));
  if (rows.length === 0) rows.push(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, 'No webhooks.')));
  body.replaceChildren(...rows);
  show(el.webhooks, true);
  show(el.webhooksNote, false);
}

function webhooksMessage(text) {
  show(el.webhooks, false);
  setText(el.webhooksNote, text);
  show(el.webhooksNote, true);
}

async function refresh() {
  const results = await Promise.allSettled([
    call('GET', '/v1/admin/nodes'),
    call('GET', '/v1/admin/connections'),
    call('GET', '/v1/webhooks'),
  ]);
  if (results.some((r) => r.status === 'rejected' && r.reason.status === 401)) {
    showLogin('The server no longer accepts this admin key.');
    return;
  }
  const [nodes, topics, webhooks] = results;
  if (nodes.status === 'fulfilled') renderNodes(nodes.value);
  if (topics.status === 'fulfilled') renderTopics(topics.value);
  if (webhooks.status === 'fulfilled') renderWebhooks(webhooks.value);
  else if (webhooks.reason.status === 404 || webhooks.reason.status === 405) webhooksMessage('Webhooks are not available on this server.');
  else webhooksMessage(`Webhooks could not be read: ${webhooks.reason.message}`);
}

// --------------------------------------------------------------- publish --

function publishResult(text, ok) {
  setText(el.publishResult, text);
  el.publishResult.className = ok ? 'small ok-text' : 'small error-text';
  show(el.publishResult, true);
}

el.publishForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = el.publishForm;
  let payload;
  try {
    payload = form.payload.value.trim() ? JSON.parse(form.payload.value) : {};
  } catch {
    publishResult('The payload is not valid JSON.', false);
    return;
  }
  const body = { topic: form.topic.value.trim(), type: form.type.value.trim(), payload };
  if (form.tenant.value.trim()) body.tenant = form.tenant.value.trim();
  try {
    const stored = await call('POST', '/v1/admin/events', body);
    publishResult(`Published #${stored.id} on ${body.tenant ? `${body.tenant}/` : ''}${stored.topic}.`, true);
  } catch (error) {
    if (error.status === 401) return showLogin('The server no longer accepts this admin key.');
    publishResult(error.message, false);
  }
});

// ------------------------------------------------------------------ tail --

const STATE_TEXT = { connecting: 'connecting…', live: 'tail live', reconnecting: 'reconnecting…', refused: 'tail stopped' };

function setTailState(state, detail) {
  el.status.dataset.state = state === 'refused' ? 'failed' : state;
  setText(el.status, STATE_TEXT[state] ?? state);
  if (state === 'refused') {
    if (detail.status === 401) return showLogin('The server no longer accepts this admin key.');
    setText(el.tailError, detail.message);
    show(el.tailError, true);
  }
}

function countTail() {
  const n = el.tail.children.length;
  setText(el.tailCount, n ? `${n} event${n === 1 ? '' : 's'}${n >= TAIL_MAX ? ' (latest kept)' : ''}` : 'waiting for events…');
}

function addToTail(frame) {
  if (!frame.id) return; // connection:* and system:* frames: not events of the log
  let event;
  try { event = JSON.parse(frame.data); } catch { return; }
  const time = event.timestamp ? new Date(event.timestamp).toLocaleTimeString() : '';
  const payload = JSON.stringify(event.payload ?? {});
  const item = h('li', { testid: 'tail-event', dataset: { id: event.id, topic: event.topic, type: event.type, tenant: event.tenant ?? '' } },
    h('div', { class: 'tail-head' },
      h('span', { class: 'tail-id' }, `#${event.id}`),
      event.tenant ? h('span', { class: 'pill tenant', title: 'tenant' }, event.tenant) : null,
      h('code', { class: 'tail-topic' }, event.topic),
      h('span', { class: 'tail-type' }, event.type),
      h('time', { class: 'muted small', datetime: event.timestamp ?? '' }, time)),
    h('code', { class: 'tail-payload' }, payload.length > 300 ? `${payload.slice(0, 300)}…` : payload));
  el.tail.prepend(item);
  while (el.tail.children.length > TAIL_MAX) el.tail.lastElementChild.remove();
  countTail();
}

function startTail() {
  tailAbort?.abort();
  tailAbort = new AbortController();
  show(el.tailError, false);
  const params = new URLSearchParams();
  for (const topic of el.tailFilter.topics.value.split(/[\s,]+/).filter(Boolean)) params.append('topic', topic);
  const tenant = el.tailFilter.tenant.value.trim();
  if (tenant) params.set('tenant', tenant);
  const query = params.toString();
  el.tail.replaceChildren();
  countTail();
  followTail(`/v1/admin/tail${query ? `?${query}` : ''}`, {
    key: adminKey,
    signal: tailAbort.signal,
    onEvent: addToTail,
    onState: setTailState,
  });
}

el.tailFilter.addEventListener('submit', (event) => {
  event.preventDefault();
  startTail();
});
$('[data-testid="tail-clear"]').addEventListener('click', () => {
  el.tail.replaceChildren();
  countTail();
});

// ------------------------------------------------------------------ start --

const saved = sessionStorage.getItem(KEY);
if (saved) open(saved);
else showLogin();
