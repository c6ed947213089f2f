// The presenter view: /present?session=<sessionId>. The tab that created
// the session holds its presenter token (sessionStorage) and gets the
// controls; any other tab watches the same live view without them.

import { api, tabStore, parseSessionId } from './api.js';
import { h, $, setText, show, connectionBadge, POLL_TYPE_LABEL } from './dom.js';
import { SessionFeed } from './feed.js';
import { resultsPanel } from './results.js';

const byTestId = (id, root = document) => $(`[data-testid="${id}"]`, root);

const sessionId = parseSessionId(new URLSearchParams(location.search).get('session'));
const presenter = sessionId ? tabStore.presenter(sessionId) : null;
const token = presenter?.token ?? null;

const view = document.getElementById('view');
const ui = {
  title: byTestId('session-title'),
  joinLink: byTestId('join-link'),
  joinCode: byTestId('join-code'),
  participants: byTestId('participant-count'),
  participantLabel: byTestId('participant-label'),
  status: byTestId('session-status'),
  start: byTestId('start-session'),
  end: byTestId('end-session'),
  copy: byTestId('copy-join-link'),
  actionError: byTestId('action-error'),
  watchOnly: byTestId('watch-only'),
  formCard: document.getElementById('poll-form-card'),
  form: document.getElementById('poll-form'),
  formError: byTestId('poll-form-error'),
  noPolls: byTestId('no-polls'),
  list: byTestId('poll-list'),
};
const setConnection = connectionBadge(byTestId('connection-status'));

function problem(title, text) {
  view.hidden = true;
  setText(byTestId('problem-title'), title);
  setText(byTestId('problem-text'), text);
  document.getElementById('problem').hidden = false;
}

function actionFailed(error, target = ui.actionError) {
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
    actionFailed(error, errorTarget);
  } finally {
    button.disabled = false;
  }
}

// ------------------------------------------------------------ poll cards --

const cards = new Map();

function pollTypeText(poll) {
  if (poll.pollType === 'multiple_choice') {
    return `${POLL_TYPE_LABEL.multiple_choice} · ${poll.allowMultiple ? 'several answers' : 'one answer'}`;
  }
  if (poll.pollType === 'rating_scale') return `${POLL_TYPE_LABEL.rating_scale} ${poll.minRating}–${poll.maxRating}`;
  return POLL_TYPE_LABEL.open_text;
}

function pollCard(poll) {
  const status = h('span', { class: 'pill', testid: 'poll-status' });
  const activate = h('button', { class: 'primary', type: 'button', testid: 'activate-poll' }, 'Open poll');
  const close = h('button', { class: 'ghost', type: 'button', testid: 'close-poll' }, 'Close poll');
  const hint = h('span', { class: 'muted small', testid: 'poll-hint' });
  const error = h('p', { class: 'form-error', testid: 'poll-error', role: 'alert', hidden: true });
  activate.addEventListener('click', () => command(activate, () => api.activatePoll(poll.pollId, token), error));
  close.addEventListener('click', () => command(close, () => api.closePoll(poll.pollId, token), error));
  const results = resultsPanel(poll);
  const footer = token ? h('footer', { class: 'poll-actions' }, activate, close, hint) : null;
  const el = h(
    'article',
    { class: 'card poll', testid: 'poll', dataset: { pollId: poll.pollId } },
    h(
      'header',
      { class: 'poll-head' },
      h('span', { class: 'poll-seq' }, `#${poll.sequenceOrder}`),
      h('span', { class: 'poll-kind' }, pollTypeText(poll)),
      status,
    ),
    h('h3', { class: 'poll-question', testid: 'poll-question-text' }, poll.question),
    results.el,
    footer,
    error,
  );
  const card = {
    el,
    update(current, sessionStatus) {
      el.dataset.status = current.status;
      el.classList.toggle('is-open', current.status === 'open');
      status.dataset.state = current.status;
      setText(status, current.status === 'open' ? 'open · voting' : current.status);
      show(activate, current.status === 'draft' && sessionStatus !== 'ended');
      activate.disabled = sessionStatus !== 'active';
      show(close, current.status === 'open');
      setText(
        hint,
        current.status === 'draft' && sessionStatus === 'draft' ? 'Start the session to open polls.' : '',
      );
      if (footer) show(footer, current.status !== 'closed' && sessionStatus !== 'ended');
      results.update(current);
    },
  };
  return card;
}

// ---------------------------------------------------------------- render --

let state = null;

function renderSession() {
  const { session } = state;
  document.title = `${session.title} — presenter — pollcast`;
  setText(ui.title, session.title);
  // The server's --public-url when it has one: the presenter's own
  // address (often localhost) is not one the audience can reach.
  const link = session.joinUrl || new URL(`/join?code=${encodeURIComponent(session.slug)}`, location.origin).href;
  ui.joinLink.href = link;
  setText(ui.joinLink, link.replace(/^https?:\/\//, ''));
  setText(ui.joinCode, session.slug);
  setText(ui.participants, state.participantCount);
  ui.participants.dataset.count = String(state.participantCount);
  setText(ui.participantLabel, state.participantCount === 1 ? 'participant' : 'participants');
  ui.status.dataset.state = session.status;
  setText(ui.status, { draft: 'not started', active: 'live session', ended: 'ended' }[session.status]);
  show(ui.start, Boolean(token) && session.status === 'draft');
  show(ui.end, Boolean(token) && session.status === 'active');
  show(ui.formCard, Boolean(token) && session.status !== 'ended');
  show(ui.watchOnly, !token);
}

function renderPolls() {
  const polls = state.orderedPolls();
  for (const poll of polls) {
    let card = cards.get(poll.pollId);
    if (!card) {
      card = pollCard(poll);
      cards.set(poll.pollId, card);
      ui.list.append(card.el);
    }
    card.update(poll, state.session.status);
  }
  show(ui.noPolls, polls.length === 0);
}

function renderAll() {
  renderSession();
  renderPolls();
}

// ----------------------------------------------------------- the form ----

function syncFormType() {
  const type = ui.form.elements.pollType.value;
  for (const part of ui.form.querySelectorAll('[data-for]')) part.hidden = part.dataset.for !== type;
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
  return poll;
}

function wireControls() {
  ui.start.addEventListener('click', () => command(ui.start, () => api.startSession(sessionId, token)));
  ui.end.addEventListener('click', () => {
    if (!ui.end.dataset.confirm) {
      // Ask once: ending closes the open poll and cannot be undone.
      ui.end.dataset.confirm = 'yes';
      setText(ui.end, 'Really end?');
      setTimeout(() => {
        delete ui.end.dataset.confirm;
        setText(ui.end, 'End session');
      }, 4000);
      return;
    }
    command(ui.end, () => api.endSession(sessionId, token));
  });
  ui.copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(ui.joinLink.href);
      setText(ui.copy, 'Copied');
    } catch {
      setText(ui.copy, 'Copy it by hand');
    }
    setTimeout(() => setText(ui.copy, 'Copy link'), 2000);
  });
  ui.form.elements.pollType.addEventListener('change', syncFormType);
  ui.form.addEventListener('submit', (event) => {
    event.preventDefault();
    const button = ui.form.querySelector('[data-testid="add-poll"]');
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

// ------------------------------------------------------------------ boot --

if (!sessionId) {
  problem('No session chosen', 'Create a session on the start page, or open the link of one.');
} else {
  if (token) wireControls();
  new SessionFeed({
    key: sessionId,
    token,
    onStatus: setConnection,
    onSnapshot(fresh) {
      state = fresh;
      for (const card of cards.values()) card.el.remove();
      cards.clear();
      view.hidden = false;
      renderAll();
    },
    onEvent() {
      renderAll();
    },
    onFatal(error) {
      if (error.status === 404 || error.status === 400) {
        problem('Session not found', 'No session has this id. It may have been created on another server.');
      } else {
        problem('Disconnected', `The server refused this view: ${error.message}`);
      }
    },
  }).start();
}
