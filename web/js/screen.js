// The projector's view: /screen?session=<sessionId>. No controls: the join
// link, QR code and join code beside the current poll, in letters a room
// can read, kept current by the session's event stream.
//
// It watches without a token, like the audience, so the server only sends
// it what the audience may see: a poll whose results are withheld shows its
// response count until `poll:results_revealed` brings the results.
//
// Keys: F toggles full screen. In a browser that holds this session's
// presenter token, Space / → / Page Down and ← / Page Up step through the
// polls: a draft poll is opened on the server; a closed one (the server
// does not reopen polls) is shown again on this screen only.
//
// This file is the page itself: it holds the page's elements and state,
// renders the current view, fits the type to the screen and handles the
// keys. The rest is in screen-state.js (the model), screen-feed.js (the
// stream), screen-views.js and screen-results.js (what is drawn).

import { api, presenterStore, parseSessionId } from './api.js';
import { h, setText } from './dom.js';
import { ScreenFeed } from './screen-feed.js';
import { pollView, welcomeView, endedView, problemView, joinLink, bareUrl } from './screen-views.js';

const byTestId = (id) => document.querySelector(`[data-testid="${id}"]`);

const ui = {
  root: document.getElementById('screen'),
  stage: document.getElementById('stage'),
  title: byTestId('screen-title'),
  connection: byTestId('connection-status'),
  joinUrl: byTestId('join-url'),
  joinCode: byTestId('join-code'),
  qrBox: byTestId('qr-box'),
  qr: byTestId('join-qr'),
  people: byTestId('participant-count'),
  peopleLabel: byTestId('participant-label'),
  banner: byTestId('storage-banner'),
  hint: byTestId('key-hint'),
  message: byTestId('screen-message'),
};

const sessionId = parseSessionId(new URLSearchParams(location.search).get('session'));

let state = null;
let view = null; // {key, el, update, tick}
let reviewPollId = null; // a closed poll the presenter stepped back to: this screen only

/** The poll this screen shows now, or null. */
function shownPoll() {
  const review = reviewPollId ? state.polls.get(reviewPollId) : null;
  return review ?? state.currentPoll();
}

/**
 * The join link, without its scheme, in two parts: where to go, large, and
 * its `?code=…`, smaller (the join page asks for the code when it is left
 * out, and the code is shown below in big letters anyway).
 */
function renderJoinUrl(link) {
  if (ui.joinUrl.dataset.href === link) return;
  ui.joinUrl.dataset.href = link;
  const bare = bareUrl(link);
  const cut = bare.indexOf('?');
  const base = cut < 0 ? bare : bare.slice(0, cut);
  const query = cut < 0 ? '' : bare.slice(cut);
  ui.joinUrl.replaceChildren(
    h('span', { class: 'join-url-base' }, base),
    query ? h('wbr', {}) : null,
    query ? h('span', { class: 'join-url-query' }, query) : null,
  );
}

function renderJoin() {
  renderJoinUrl(joinLink(state));
  setText(ui.joinCode, state.session.slug);
  setText(ui.people, state.participantCount);
  ui.people.dataset.count = String(state.participantCount);
  setText(ui.peopleLabel, state.participantCount === 1 ? 'person here' : 'people here');
  ui.banner.hidden = state.storage !== 'memory';
}

/** The QR image is set once; until the server has it (or if it fails) the box stays hidden. */
function loadQr() {
  ui.qr.addEventListener('load', () => {
    ui.qrBox.hidden = false;
    ui.qrBox.dataset.state = 'loaded';
    fitStage();
  });
  ui.qr.addEventListener('error', () => {
    ui.qrBox.hidden = true;
    ui.qrBox.dataset.state = 'missing';
  });
  ui.qr.src = `/v1/sessions/${encodeURIComponent(sessionId)}/qr.svg`;
}

function viewKey() {
  if (state.session.status === 'ended') return 'ended';
  const poll = shownPoll();
  return poll ? `poll:${poll.pollId}` : 'welcome';
}

function render() {
  document.title = `${state.session.title} — screen — pollcast`;
  setText(ui.title, state.session.title);
  ui.root.dataset.session = state.session.status;
  renderJoin();
  const key = viewKey();
  ui.root.dataset.view = key.split(':')[0];
  let grew = false;
  if (!view || view.key !== key) {
    const poll = shownPoll();
    const next =
      key === 'ended' ? endedView(state) : key === 'welcome' ? welcomeView(state) : pollView(poll);
    view = { key, ...next };
    ui.stage.replaceChildren(view.el);
    grew = true;
  }
  const poll = shownPoll();
  if (view.key.startsWith('poll:') && view.update(state, poll, { review: poll.pollId === reviewPollId })) grew = true;
  if (grew) fitStage();
}

const FIT_MIN = 0.6;
const FIT_MAX = 1.3;
const FIT_STEP = 0.05;

/**
 * Scales the stage's type (the `--fit` factor) to the poll: up to 1.3× when
 * a short poll leaves the screen half empty, down to 0.6× for long
 * questions, many options or many answers, so that nothing scrolls.
 */
function fitStage() {
  const stage = ui.stage;
  const setFit = (value) => stage.style.setProperty('--fit', value.toFixed(2));
  const overflows = () => stage.scrollHeight > stage.clientHeight + 1;
  let fit = 1;
  setFit(fit);
  if (overflows()) {
    while (overflows() && fit > FIT_MIN + 0.001) setFit((fit -= FIT_STEP));
  } else {
    // Grow only polls (a welcome or a thank-you is sized already).
    while (view?.key.startsWith('poll:') && fit < FIT_MAX - 0.001) {
      setFit((fit += FIT_STEP));
      if (overflows()) {
        setFit((fit -= FIT_STEP));
        break;
      }
    }
  }
  stage.dataset.fit = fit.toFixed(2);
}

const STATUS_TEXT = { connecting: 'connecting…', reconnecting: 'reconnecting…', failed: 'disconnected' };

function setStatus(status) {
  ui.connection.dataset.state = status;
  ui.connection.hidden = !(status in STATUS_TEXT);
  setText(ui.connection, STATUS_TEXT[status] ?? status);
}

let messageTimer = null;

function say(text) {
  setText(ui.message, text);
  ui.message.hidden = false;
  clearTimeout(messageTimer);
  messageTimer = setTimeout(() => {
    ui.message.hidden = true;
  }, 4000);
}

function fatal(error) {
  setStatus('failed');
  ui.root.dataset.session = 'missing';
  const text =
    error?.status === 404
      ? error.message || 'There is no such session on this server.'
      : error?.message || 'This session cannot be shown.';
  ui.stage.replaceChildren(problemView('Session not found', text));
}

// ============================================================== keyboard ==

/** The presenter token this browser holds for the session (the presenter key), if any. */
function presenterToken() {
  return presenterStore.token(sessionId);
}

function toggleFullScreen() {
  if (document.fullscreenElement) {
    document.exitFullscreen?.().catch(() => {});
  } else {
    const request = document.documentElement.requestFullscreen?.();
    if (!request) say('This browser cannot go full screen.');
    else request.catch(() => say('Full screen was refused by the browser.'));
  }
}

let stepping = false;

/** Moves to the poll after (+1) or before (−1) the one on screen. */
async function step(direction) {
  const token = presenterToken();
  if (!token || !state || stepping) return;
  if (state.session.status !== 'active') {
    say(state.session.status === 'draft' ? 'Start the session in the presenter view first.' : 'The session has ended.');
    return;
  }
  const polls = state.ordered();
  const shown = shownPoll();
  const target = polls[(shown ? polls.indexOf(shown) : -1) + direction];
  if (!target) {
    say(direction > 0 ? 'That was the last poll.' : 'This is the first poll.');
    return;
  }
  if (target.status !== 'draft') {
    // Open or closed: show it (closed polls do not reopen on the server).
    reviewPollId = target.status === 'closed' ? target.pollId : null;
    render();
    return;
  }
  stepping = true;
  ui.root.dataset.stepping = 'yes';
  try {
    await api.activatePoll(target.pollId, token);
    // poll:activated switches the screen to it.
  } catch (error) {
    say(error.message);
  } finally {
    stepping = false;
    delete ui.root.dataset.stepping;
  }
}

const NEXT_KEYS = new Set([' ', 'ArrowRight', 'PageDown']);
const PREVIOUS_KEYS = new Set(['ArrowLeft', 'PageUp']);

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === 'f' || event.key === 'F') {
    event.preventDefault();
    if (!event.repeat) toggleFullScreen();
    return;
  }
  const direction = NEXT_KEYS.has(event.key) ? 1 : PREVIOUS_KEYS.has(event.key) ? -1 : 0;
  if (!direction) return;
  event.preventDefault(); // no scrolling on Space
  if (!event.repeat) step(direction);
}

let hintTimer = null;

/** Shows the key hint for a few seconds (at start, and when the mouse moves). */
function showHint() {
  const nav = presenterToken() ? ' · Space / →: next poll · ←: previous' : '';
  setText(ui.hint, `F: full screen${nav}`);
  ui.hint.classList.remove('faded');
  ui.root.classList.remove('idle');
  clearTimeout(hintTimer);
  hintTimer = setTimeout(() => {
    ui.hint.classList.add('faded');
    ui.root.classList.add('idle'); // and the mouse pointer goes away
  }, 4000);
}

// ================================================================== boot ==

function boot() {
  document.addEventListener('keydown', onKey);
  document.addEventListener('mousemove', showHint, { passive: true });
  showHint();
  if (!sessionId) {
    ui.root.dataset.session = 'missing';
    ui.stage.replaceChildren(
      problemView('No session', 'Open this page from the presenter view: /screen?session=<session id>.'),
    );
    return;
  }
  loadQr();
  const feed = new ScreenFeed(sessionId, {
    onState(fresh) {
      state = fresh;
      view = null; // rebuild from the fresh snapshot
      render();
    },
    onEvent(event) {
      if (event.type === 'poll:activated') reviewPollId = null;
      render();
    },
    onStatus: setStatus,
    onFatal: fatal,
  });
  feed.resync();
  setInterval(() => {
    if (state && view?.key.startsWith('poll:')) view.tick(state, shownPoll());
  }, 250);
  window.addEventListener('resize', () => {
    if (view) fitStage();
  });
}

boot();
