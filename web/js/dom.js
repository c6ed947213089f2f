// Small DOM helpers. Text always goes in through text nodes, never as
// markup, so nothing a participant types can become HTML.

/**
 * Creates an element: h('button', { class: 'primary', testid: 'x', onclick }, 'Label').
 * `testid` sets data-testid, `dataset` sets data-* attributes, `on…` adds
 * listeners, booleans toggle attributes.
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'testid') el.dataset.testid = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value' || key === 'checked') el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Sets text only when it changed (keeps selections and avoids layout work). */
export function setText(el, text) {
  const value = String(text);
  if (el.textContent !== value) el.textContent = value;
}

export function show(el, visible) {
  el.hidden = !visible;
}

export const $ = (selector, root = document) => root.querySelector(selector);

const STATUS_TEXT = {
  connecting: 'connecting…',
  live: 'live',
  reconnecting: 'reconnecting…',
  failed: 'disconnected',
  ended: 'session ended',
};

/** Drives the connection badge (data-testid="connection-status"). */
export function connectionBadge(el) {
  return (state) => {
    el.dataset.state = state;
    setText(el, STATUS_TEXT[state] ?? state);
    el.title =
      state === 'live'
        ? 'Receiving live updates'
        : state === 'reconnecting'
          ? 'The connection dropped; catching up by itself'
          : '';
  };
}

export function plural(n, one, many = `${one}s`) {
  return `${n} ${n === 1 ? one : many}`;
}

export function formatPercent(value) {
  const n = Number(value) || 0;
  return `${Number.isInteger(n) ? n : n.toFixed(1)}%`;
}

export function formatAverage(value) {
  return value === null || value === undefined ? '–' : Number(value).toFixed(2);
}

export const POLL_TYPE_LABEL = {
  multiple_choice: 'Multiple choice',
  rating_scale: 'Rating',
  open_text: 'Open text',
};

/** "1:05" for the milliseconds left, rounded up to whole seconds. */
export function formatRemaining(ms) {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, '0')}`;
}

/**
 * A countdown to a poll's `closesAt` on the server's clock (`serverNow()`
 * gives it): `set(closesAt)` starts, moves or (with null) hides it; `onZero`
 * runs once when the time is up. The element gets data-remaining (seconds).
 */
export function countdown(el, serverNow, onZero) {
  let timer = null;
  let target = null;
  let fired = false;
  function tick() {
    const left = target - serverNow();
    el.dataset.remaining = String(Math.max(0, Math.ceil(left / 1000)));
    el.classList.toggle('ending', left <= 10_000);
    setText(el, left > 0 ? `${formatRemaining(left)} left` : 'time is up');
    if (left <= 0) {
      stop();
      if (!fired) {
        fired = true;
        onZero?.();
      }
    }
  }
  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
  }
  return {
    set(closesAt) {
      const next = closesAt ? Date.parse(closesAt) : null;
      if (next === target) return;
      stop();
      target = next;
      fired = false;
      el.hidden = target === null;
      if (target === null) return;
      tick();
      if (!fired) timer = setInterval(tick, 250);
    },
    stop,
  };
}
