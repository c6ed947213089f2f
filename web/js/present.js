// The presenter view: /present?session=<sessionId>[#key=<presenterKey>].
//
// The presenter key (the presenter token) is kept in localStorage, so any
// tab or window of this browser has the controls; the presenter link
// carries it in the fragment (never sent to a server) to another browser or
// device. Without a key the page asks for the link instead of dead-ending.
//
// Layout for a meeting: the open poll on top, the drafts under it with the
// form to add one, closed polls folded at the bottom; joining (QR, link,
// code), presenter access, export and "End session" in the side column.

import { api, presenterStore, keyFromPaste, parseSessionId, downloadWithToken } from './api.js';
import { h, $, setText, show, connectionBadge, countdown, plural, POLL_TYPE_LABEL } from './dom.js';
import { SessionFeed } from './feed.js';
import { resultsPanel } from './results.js';

const byTestId = (id, root = document) => $(`[data-testid="${id}"]`, root);

const sessionId = parseSessionId(new URLSearchParams(location.search).get('session'));
let token = null;

const view = document.getElementById('view');
const ui = {
  title: byTestId('session-title'),
  screenLink: byTestId('open-screen'),
  storageBanner: byTestId('storage-banner'),
  startCard: byTestId('start-card'),
  start: byTestId('start-session'),
  live: byTestId('live-polls'),
  noLive: byTestId('no-live-poll'),
  drafts: byTestId('draft-polls'),
  noPolls: byTestId('no-polls'),
  closed: byTestId('closed-polls'),
  closedSection: byTestId('closed-section'),
  formCard: document.getElementById('poll-form-card'),
  form: document.getElementById('poll-form'),
  formError: byTestId('poll-form-error'),
  qr: byTestId('join-qr'),
  joinLink: byTestId('join-link'),
  joinCode: byTestId('join-code'),
  participants: byTestId('participant-count'),
  participantLabel: byTestId('participant-label'),
  status: byTestId('session-status'),
  copy: byTestId('copy-join-link'),
  actionError: byTestId('action-error'),
  presenterLink: byTestId('presenter-link'),
  showPresenterLink: byTestId('show-presenter-link'),
  copyPresenterLink: byTestId('copy-presenter-link'),
  invite: byTestId('invite-presenter'),
  coPresenter: byTestId('co-presenter'),
  coPresenterLink: byTestId('co-presenter-link'),
  copyCoPresenterLink: byTestId('copy-co-presenter-link'),
  accessError: byTestId('access-error'),
  exportCsv: byTestId('export-csv'),
  exportJson: byTestId('export-json'),
  exportStatus: byTestId('export-status'),
  endCard: byTestId('end-card'),
  end: byTestId('end-session'),
};
const connection = byTestId('connection-status');
const setConnection = connectionBadge(connection);

function only(name) {
  for (const id of ['view', 'key-needed', 'problem']) document.getElementById(id).hidden = id !== name;
}

function problem(title, text) {
  setText(byTestId('problem-title'), title);
  setText(byTestId('problem-text'), text);
  only('problem');
}

function failed(target, error) {
  target.textContent = error.message;
  target.hidden = false;
}

/** Runs a presenter command with its button disabled; shows why it failed. */
async function command(button, run, errorTarget = ui.actionError) {
  errorTarget.hidden = true;
  button.disabled = true;
  try {
    await run();
  } catch (error) {
    failed(errorTarget, error);
  } finally {
    button.disabled = false;
  }
}

/** Copies `text`; the button says whether it worked, then gets its label back. */
async function copy(button, text) {
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(text);
    setText(button, 'Copied');
  } catch {
    setText(button, 'Select and copy it by hand');
  }
  setTimeout(() => setText(button, label), 2000);
}

// ------------------------------------------------------------ poll cards --

const VISIBILITY_TEXT = {
  always: 'results always visible',
  after_vote: 'results after voting',
  after_close: 'results after close',
  manual: 'results when you reveal them',
};

const TIMERS = [
  ['', 'No timer'],
  ['10', '10 s'],
  ['30', '30 s'],
  ['60', '1 min'],
  ['120', '2 min'],
  ['300', '5 min'],
];

function pollTypeText(poll) {
  const kind =
    poll.pollType === 'multiple_choice'
      ? `${POLL_TYPE_LABEL.multiple_choice} · ${poll.allowMultiple ? 'several answers' : 'one answer'}`
      : poll.pollType === 'rating_scale'
        ? `${POLL_TYPE_LABEL.rating_scale} ${poll.minRating}–${poll.maxRating}`
        : POLL_TYPE_LABEL.open_text;
  return `${kind} · ${VISIBILITY_TEXT[poll.resultsVisibility ?? 'always']}`;
}

const STATUS_TEXT = { draft: 'draft', open: 'open · voting', closed: 'closed' };

/** The controls of a card: open (with a timer), close, reveal. */
function pollControls(poll, error) {
  const timer = h(
    'select',
    { class: 'timer', testid: 'poll-timer', 'aria-label': 'Timer' },
    TIMERS.map(([value, label]) => h('option', { value }, label)),
  );
  const activate = h('button', { class: 'primary', type: 'button', testid: 'activate-poll' }, 'Open poll');
  const close = h('button', { class: 'ghost', type: 'button', testid: 'close-poll' }, 'Close poll');
  const reveal = h('button', { class: 'reveal', type: 'button', testid: 'reveal-results' }, 'Reveal results');
  const hint = h('span', { class: 'muted small', testid: 'poll-hint' });
  activate.addEventListener('click', () =>
    command(activate, () => api.activatePoll(poll.pollId, token, Number(timer.value) || undefined), error),
  );
  close.addEventListener('click', () => command(close, () => api.closePoll(poll.pollId, token), error));
  reveal.addEventListener('click', () => command(reveal, () => api.revealPoll(poll.pollId, token), error));
  const el = h('footer', { class: 'poll-actions' }, timer, activate, close, reveal, hint);
  return {
    el,
    update(current, sessionStatus) {
      const draft = current.status === 'draft' && sessionStatus !== 'ended';
      show(timer, draft);
      show(activate, draft);
      activate.disabled = sessionStatus !== 'active';
      show(close, current.status === 'open');
      show(reveal, current.status !== 'draft' && !current.resultsRevealed);
      setText(hint, current.status === 'draft' && sessionStatus === 'draft' ? 'Start the session to open polls.' : '');
      show(el, draft || current.status === 'open' || !reveal.hidden);
    },
  };
}

function pollCard(poll) {
  const status = h('span', { class: 'pill', testid: 'poll-status' });
  const hidden = h('span', { class: 'pill hidden-badge', testid: 'results-hidden-badge', hidden: true }, 'hidden from audience');
  const clock = h('span', { class: 'countdown', testid: 'countdown', hidden: true });
  const timeLeft = countdown(clock, () => state.serverNow());
  const toggle = h('button', { class: 'link-button', type: 'button', testid: 'toggle-results', 'aria-expanded': 'false' });
  const error = h('p', { class: 'form-error', testid: 'poll-error', role: 'alert', hidden: true });
  const hideAnswer = (text, button) =>
    command(button, () => api.hideAnswer(poll.pollId, token, text), error);
  const results = resultsPanel(poll, { onHide: poll.pollType === 'open_text' ? hideAnswer : undefined });
  const controls = pollControls(poll, error);
  const body = h('div', { class: 'poll-body' }, results.el);
  let expanded = false;
  toggle.addEventListener('click', () => {
    expanded = !expanded;
    card.update(state.polls.get(poll.pollId), state.session.status);
  });
  const el = h(
    'article',
    { class: 'card poll', testid: 'poll', dataset: { pollId: poll.pollId } },
    h(
      'header',
      { class: 'poll-head' },
      h('span', { class: 'poll-seq' }, `#${poll.sequenceOrder}`),
      h('span', { class: 'poll-kind', testid: 'poll-kind' }),
      hidden,
      clock,
      status,
    ),
    h('h3', { class: 'poll-question', testid: 'poll-question-text' }, poll.question),
    body,
    token ? controls.el : null,
    h('div', { class: 'poll-foot' }, toggle),
    error,
  );
  const card = {
    el,
    status: null,
    update(current, sessionStatus) {
      if (current.status !== card.status && current.status === 'closed') expanded = false;
      card.status = current.status;
      el.dataset.status = current.status;
      el.classList.toggle('is-open', current.status === 'open');
      status.dataset.state = current.status;
      setText(status, STATUS_TEXT[current.status] ?? current.status);
      setText(el.querySelector('.poll-kind'), pollTypeText(current));
      show(hidden, !current.resultsRevealed && current.status !== 'draft');
      timeLeft.set(current.status === 'open' ? current.closesAt : null);
      // Closed polls fold to their question and total; drafts have no results yet.
      const folded = current.status === 'closed' && !expanded;
      show(body, current.status !== 'draft' && !folded);
      show(toggle, current.status === 'closed');
      toggle.setAttribute('aria-expanded', String(!folded));
      setText(toggle, folded ? `Show results (${plural(current.count, 'vote')})` : 'Hide results');
      controls.update(current, sessionStatus);
      results.update(current);
    },
  };
  return card;
}

// ---------------------------------------------------------------- render --

let state = null;
const cards = new Map();

function joinLink(session) {
  // The server's --public-url when it has one: the presenter's own
  // address (often localhost) is not one the audience can reach.
  return session.joinUrl || new URL(`/join?code=${encodeURIComponent(session.slug)}`, location.origin).href;
}

/** This page's link with the key in the fragment, on the public origin when there is one. */
function presenterLink(key) {
  const origin = state?.session.joinUrl ? new URL(state.session.joinUrl).origin : location.origin;
  return `${origin}/present?session=${encodeURIComponent(sessionId)}#key=${encodeURIComponent(key)}`;
}

function renderSession() {
  const { session } = state;
  document.title = `${session.title} — presenter — pollcast`;
  setText(ui.title, session.title);
  const link = joinLink(session);
  ui.joinLink.href = link;
  setText(ui.joinLink, link.replace(/^https?:\/\//, ''));
  setText(ui.joinCode, session.slug);
  setText(ui.participants, state.participantCount);
  ui.participants.dataset.count = String(state.participantCount);
  setText(ui.participantLabel, state.participantCount === 1 ? 'participant' : 'participants');
  ui.status.dataset.state = session.status;
  setText(ui.status, { draft: 'not started', active: 'live session', ended: 'ended' }[session.status]);
  show(ui.storageBanner, state.storage === 'memory');
  show(ui.startCard, session.status === 'draft');
  show(ui.endCard, session.status === 'active');
  show(ui.formCard, session.status !== 'ended');
}

/** Puts `els` into `parent` in this order, touching the DOM only when it differs. */
function place(parent, els) {
  const now = [...parent.children];
  if (now.length === els.length && now.every((el, i) => el === els[i])) return;
  parent.replaceChildren(...els);
}

function renderPolls() {
  const polls = state.orderedPolls();
  const groups = { open: [], draft: [], closed: [] };
  for (const poll of polls) {
    let card = cards.get(poll.pollId);
    if (!card) {
      card = pollCard(poll);
      cards.set(poll.pollId, card);
    }
    card.update(poll, state.session.status);
    groups[poll.status]?.push(card.el);
  }
  place(ui.live, groups.open);
  place(ui.drafts, groups.draft);
  place(ui.closed, groups.closed.reverse()); // the latest closed first
  show(ui.noLive, groups.open.length === 0 && state.session.status !== 'ended');
  setText(ui.noLive, groups.draft.length ? 'No poll is open. Open one from “Up next”.' : 'No poll is open.');
  show(ui.noPolls, groups.draft.length === 0 && state.session.status !== 'ended');
  show(ui.closedSection, groups.closed.length > 0);
  // With nothing to open, the form is what the presenter needs next.
  if (groups.draft.length === 0 && groups.open.length === 0 && !ui.formCard.dataset.touched) ui.formCard.open = true;
}

function renderAll() {
  renderSession();
  renderPolls();
}

// ----------------------------------------------------------- the form ----

const DEFAULT_VISIBILITY = { multiple_choice: 'always', rating_scale: 'always', open_text: 'manual' };

function syncFormType() {
  const type = ui.form.elements.pollType.value;
  for (const part of ui.form.querySelectorAll('[data-for]')) part.hidden = part.dataset.for !== type;
  ui.form.elements.resultsVisibility.value = DEFAULT_VISIBILITY[type];
}

function pollFromForm() {
  const f = ui.form.elements;
  const poll = { question: f.question.value.trim(), pollType: f.pollType.value };
  if (!poll.question) throw new Error('Write a question.');
  if (poll.pollType === 'multiple_choice') {
    poll.options = f.options.value
      .split('\n')
      .map((o) => o.trim())
      .filter(Boolean);
    if (poll.options.length < 2 || poll.options.length > 20) throw new Error('Give 2 to 20 options, one per line.');
    poll.allowMultiple = f.allowMultiple.checked;
  } else if (poll.pollType === 'rating_scale') {
    poll.minRating = Number.parseInt(f.minRating.value, 10);
    poll.maxRating = Number.parseInt(f.maxRating.value, 10);
    if (!(poll.minRating < poll.maxRating)) throw new Error('The scale must go from a lower to a higher number.');
  }
  // Sent only when it differs from the server's default for the type.
  if (f.resultsVisibility.value !== DEFAULT_VISIBILITY[poll.pollType]) poll.resultsVisibility = f.resultsVisibility.value;
  return poll;
}

function wireForm() {
  ui.formCard.addEventListener('toggle', () => {
    ui.formCard.dataset.touched = 'yes';
  });
  ui.form.elements.pollType.addEventListener('change', syncFormType);
  ui.form.addEventListener('submit', (event) => {
    event.preventDefault();
    const button = byTestId('add-poll', ui.form);
    command(
      button,
      async () => {
        await api.createPoll(sessionId, token, pollFromForm());
        ui.form.elements.question.value = '';
        ui.form.elements.options.value = '';
        ui.form.elements.allowMultiple.checked = false;
        ui.form.elements.question.focus();
      },
      ui.formError,
    );
  });
  syncFormType();
}

// ------------------------------------------------- session-level controls --

function armEnd() {
  // Ask once more: ending closes the open poll and cannot be undone.
  ui.end.dataset.confirm = 'yes';
  setText(ui.end, 'Yes, end it for everyone');
  setTimeout(() => {
    delete ui.end.dataset.confirm;
    setText(ui.end, 'End session…');
  }, 5000);
}

async function exportAs(button, format) {
  setText(ui.exportStatus, '');
  await command(
    button,
    async () => {
      const name = await downloadWithToken(
        `/v1/sessions/${encodeURIComponent(sessionId)}/export.${format}`,
        token,
        `pollcast-${state?.session.slug ?? 'session'}.${format}`,
      );
      setText(ui.exportStatus, `Saved ${name}.`);
    },
    ui.exportStatus,
  );
}

function wireControls() {
  ui.start.addEventListener('click', () => command(ui.start, () => api.startSession(sessionId, token)));
  ui.end.addEventListener('click', () => {
    if (!ui.end.dataset.confirm) return armEnd();
    command(ui.end, () => api.endSession(sessionId, token));
  });
  ui.copy.addEventListener('click', () => copy(ui.copy, ui.joinLink.href));
  ui.showPresenterLink.addEventListener('click', () => {
    const shown = ui.presenterLink.type === 'text';
    ui.presenterLink.type = shown ? 'password' : 'text';
    setText(ui.showPresenterLink, shown ? 'Show' : 'Hide');
  });
  ui.copyPresenterLink.addEventListener('click', () => copy(ui.copyPresenterLink, ui.presenterLink.value));
  ui.copyCoPresenterLink.addEventListener('click', () => copy(ui.copyCoPresenterLink, ui.coPresenterLink.value));
  ui.invite.addEventListener('click', () =>
    command(
      ui.invite,
      async () => {
        const invited = await api.invitePresenter(sessionId, token);
        ui.coPresenterLink.value = presenterLink(invited.presenterToken);
        show(ui.coPresenter, true);
        ui.coPresenterLink.select();
      },
      ui.accessError,
    ),
  );
  ui.exportCsv.addEventListener('click', () => exportAs(ui.exportCsv, 'csv'));
  ui.exportJson.addEventListener('click', () => exportAs(ui.exportJson, 'json'));
  ui.screenLink.addEventListener('click', (event) => {
    // Its own window, ready to drag to the projector; the link still works
    // as a link (middle click, or where pop-ups are refused).
    const opened = window.open(ui.screenLink.href, 'pollcast-screen', 'popup,width=1280,height=720');
    if (opened) event.preventDefault();
  });
  ui.qr.addEventListener('error', () => show(ui.qr, false));
  ui.qr.addEventListener('load', () => show(ui.qr, true));
  wireForm();
}

// -------------------------------------------------------- presenter key --

/** A key in the address (`#key=…`) is kept, then taken out of the address bar. */
function takeKeyFromAddress() {
  const key = new URLSearchParams(location.hash.slice(1)).get('key');
  if (!key) return;
  presenterStore.save(sessionId, key);
  history.replaceState(null, '', `${location.pathname}${location.search}`);
}

/** Asks for the presenter link, once the session is known to exist (else: the server's reason). */
async function askForKey(reason) {
  show(connection, false);
  try {
    const snapshot = await api.snapshot(sessionId);
    setText(byTestId('key-needed-session'), `“${snapshot.title}”`);
  } catch (error) {
    if (error.status === 404 || error.status === 400) return problem('Session not found', error.message);
  }
  const screen = byTestId('key-needed-screen');
  screen.href = `/screen?session=${encodeURIComponent(sessionId)}`;
  const error = byTestId('key-error');
  show(error, Boolean(reason));
  if (reason) setText(error, reason);
  only('key-needed');
  const form = document.getElementById('key-form');
  form.onsubmit = (event) => {
    event.preventDefault();
    const pasted = form.elements.key.value;
    const key = keyFromPaste(pasted);
    if (!key) {
      setText(error, 'That is not a presenter link or key. The link looks like …/present?session=…#key=…');
      return show(error, true);
    }
    const other = parseSessionId(/[?&]session=([^&#\s]+)/.exec(pasted)?.[1]);
    const target = other ?? sessionId;
    presenterStore.save(target, key);
    if (target !== sessionId) return location.assign(`/present?session=${encodeURIComponent(target)}`);
    present(presenterStore.token(sessionId));
  };
}

// ------------------------------------------------------------------ boot --

let wired = false;

function present(key) {
  token = key;
  show(connection, true);
  ui.presenterLink.value = presenterLink(token);
  ui.screenLink.href = `/screen?session=${encodeURIComponent(sessionId)}`;
  ui.qr.src = `/v1/sessions/${encodeURIComponent(sessionId)}/qr.svg`;
  show(ui.screenLink, true);
  if (!wired) wireControls();
  wired = true;
  const feed = new SessionFeed({
    key: sessionId,
    token,
    onStatus: setConnection,
    onSnapshot(fresh) {
      state = fresh;
      for (const card of cards.values()) card.el.remove();
      cards.clear();
      ui.presenterLink.value = presenterLink(token);
      only('view');
      renderAll();
    },
    onEvent() {
      renderAll();
    },
    onFatal(error) {
      feed.stop();
      if (error.status === 401 || error.status === 403) {
        presenterStore.forget(sessionId);
        show(ui.screenLink, false);
        askForKey(`This presenter key was refused (${error.message}). Keys last 7 days; ask for a fresh link.`);
      } else if (error.status === 404 || error.status === 400) {
        problem('Session not found', error.message);
      } else {
        problem('Disconnected', `The server refused this view: ${error.message}`);
      }
    },
  }).start();
}

if (!sessionId) {
  problem('No session chosen', 'Create a session on the start page, or open the link of one.');
} else {
  takeKeyFromAddress();
  const key = presenterStore.token(sessionId);
  if (key) present(key);
  else askForKey(null);
}
