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

import { api, presenterStore, parseSessionId } from './api.js';
import { h, setText, plural, formatPercent, formatAverage } from './dom.js';

// ================================================================= state ==

const RESULT_FIELDS = [
  'currentVoteCount',
  'voteBreakdown',
  'averageRating',
  'ratingDistribution',
  'textResponses',
  'textGroups',
];

function blankResults(poll) {
  const distribution = {};
  if (poll.pollType === 'rating_scale') {
    for (let v = poll.minRating; v <= poll.maxRating; v += 1) distribution[v] = 0;
  }
  return {
    currentVoteCount: 0,
    voteBreakdown: [],
    averageRating: null,
    ratingDistribution: distribution,
    textResponses: [],
    textGroups: null,
  };
}

/** Whether the room may see a poll's results, from what the server said. */
function resultsArePublic(raw) {
  if (raw.results === null) return false; // withheld from this (token-less) caller
  if (typeof raw.resultsVisible === 'boolean') return raw.resultsVisible;
  if (typeof raw.resultsRevealed === 'boolean') return raw.resultsRevealed;
  return true; // a server without results visibility always shows them
}

/** How many have answered, when the server said; null when it did not. */
function knownCount(raw) {
  const count = raw.results?.currentVoteCount ?? raw.currentVoteCount ?? raw.voteCount;
  if (typeof count === 'number') return count;
  return raw.results === null ? null : 0; // withheld: the count comes with the next vote
}

function screenPoll(raw) {
  const results = { ...blankResults(raw), ...(raw.results ?? {}) };
  results.currentVoteCount = knownCount(raw);
  return { ...raw, closesAt: raw.closesAt ?? null, visible: resultsArePublic(raw), results };
}

function copyResults(poll, payload) {
  for (const field of RESULT_FIELDS) if (field in payload) poll.results[field] = payload[field];
}

/** The session as the screen shows it: one snapshot, then the events. */
class ScreenState {
  constructor(snapshot, clockOffset) {
    this.session = {
      sessionId: snapshot.sessionId,
      title: snapshot.title,
      slug: snapshot.slug,
      status: snapshot.status,
      joinUrl: snapshot.joinUrl ?? null,
    };
    this.storage = snapshot.storage ?? null;
    this.clockOffset = clockOffset;
    this.participantCount = snapshot.participantCount ?? 0;
    this.activePollId = snapshot.activePollId ?? null;
    this.polls = new Map(snapshot.polls.map((p) => [p.pollId, screenPoll(p)]));
  }

  /** The server's clock now, as well as this browser can tell. */
  serverNow() {
    return Date.now() + this.clockOffset;
  }

  ordered() {
    return [...this.polls.values()].sort((a, b) => a.sequenceOrder - b.sequenceOrder);
  }

  /** The open poll; else the poll closed last; else none. */
  currentPoll() {
    const open = this.activePollId ? this.polls.get(this.activePollId) : null;
    if (open) return open;
    const closed = this.ordered().filter((p) => p.status === 'closed');
    // Polls closed while this page watched know when; the others go by order.
    const when = (p) => (p.closedAt ? Date.parse(p.closedAt) : 0);
    closed.sort((a, b) => when(a) - when(b) || a.sequenceOrder - b.sequenceOrder);
    return closed.at(-1) ?? null;
  }

  totalResponses() {
    let total = 0;
    for (const poll of this.polls.values()) total += poll.results.currentVoteCount ?? 0;
    return total;
  }

  apply(event) {
    const p = event.payload ?? {};
    const poll = p.pollId ? this.polls.get(p.pollId) : null;
    switch (event.type) {
      case 'session:started':
        this.session.status = 'active';
        if (typeof p.participantCount === 'number') this.participantCount = p.participantCount;
        break;
      case 'session:ended':
        this.session.status = 'ended';
        this.activePollId = null;
        if (typeof p.finalParticipantCount === 'number') this.participantCount = p.finalParticipantCount;
        break;
      case 'poll:created':
        if (!poll) this.polls.set(p.pollId, screenPoll({ ...p, status: 'draft' }));
        break;
      case 'poll:activated':
        if (poll) {
          poll.status = 'open';
          poll.closesAt = p.closesAt ?? null;
        }
        this.activePollId = p.pollId;
        break;
      case 'poll:closed':
        if (poll) {
          poll.status = 'closed';
          poll.closedAt = p.closedAt;
          poll.closeReason = p.reason ?? null;
          poll.results.currentVoteCount = Math.max(poll.results.currentVoteCount ?? 0, p.finalVoteCount ?? 0);
        }
        if (this.activePollId === p.pollId) this.activePollId = null;
        break;
      case 'vote:accepted':
        // Counts only grow: an older aggregate never replaces a newer one.
        if (!poll || p.currentVoteCount < (poll.results.currentVoteCount ?? 0)) break;
        if (p.resultsWithheld) {
          poll.visible = false;
          poll.results.currentVoteCount = p.currentVoteCount;
        } else {
          poll.visible = true;
          copyResults(poll, p);
        }
        break;
      case 'poll:results_revealed':
        if (poll) {
          poll.visible = true;
          copyResults(poll, p);
        }
        break;
      case 'participant:joined':
      case 'participant:disconnected':
        if (typeof p.participantCount === 'number') this.participantCount = p.participantCount;
        break;
      default:
        break;
    }
  }
}

// ================================================================ stream ==

const SESSION_EVENTS = [
  'session:started',
  'session:ended',
  'poll:created',
  'poll:activated',
  'poll:closed',
  'poll:results_revealed',
  'vote:accepted',
  'participant:joined',
  'participant:disconnected',
];

/** 1 s, 2 s, 4 s … up to 15 s, with jitter. */
function backoff(attempt) {
  const base = Math.min(15000, 1000 * 2 ** Math.min(attempt, 4));
  return base / 2 + Math.random() * (base / 2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Snapshot, then the public stream from its `lastEventId`. A dropped stream
 * is resumed by EventSource itself (Last-Event-ID); a stream that ends for
 * good, or a `connection:reset`, brings a fresh snapshot. Events at or below
 * the last id applied are duplicates and skipped.
 */
class ScreenFeed {
  constructor(sessionId, { onState, onEvent, onStatus, onFatal }) {
    this.sessionId = sessionId;
    this.handlers = { onState, onEvent, onStatus, onFatal };
    this.source = null;
    this.state = null;
    this.lastId = null;
    this.failures = 0;
  }

  async resync() {
    this.close();
    this.handlers.onStatus(this.state ? 'reconnecting' : 'connecting');
    for (let attempt = 0; ; attempt += 1) {
      try {
        const sent = Date.now();
        const snapshot = await api.snapshot(this.sessionId);
        const received = Date.now();
        // The server's clock minus ours, measured at the request's midpoint.
        const offset = snapshot.serverTime ? Date.parse(snapshot.serverTime) - (sent + received) / 2 : 0;
        this.lastId = snapshot.lastEventId;
        this.state = new ScreenState(snapshot, Number.isFinite(offset) ? offset : 0);
        break;
      } catch (error) {
        if (error.status === 404 || error.status === 400) {
          this.handlers.onFatal(error);
          return;
        }
        this.handlers.onStatus('reconnecting');
        await sleep(backoff(attempt));
      }
    }
    this.handlers.onState(this.state);
    if (this.state.session.status === 'ended') this.handlers.onStatus('ended');
    else this.open();
  }

  close() {
    this.source?.close();
    this.source = null;
  }

  open() {
    const query = this.lastId === null ? '' : `?lastEventId=${encodeURIComponent(this.lastId)}`;
    const source = new EventSource(`/v1/sessions/${encodeURIComponent(this.sessionId)}/events${query}`);
    this.source = source;
    const mine = (fn) => (message) => {
      if (this.source === source) fn(message);
    };
    source.onopen = mine(() => {
      this.failures = 0;
      this.handlers.onStatus('live');
    });
    source.onerror = mine(() => {
      if (source.readyState === EventSource.CLOSED) this.retry();
      else this.handlers.onStatus('reconnecting'); // the browser resumes with Last-Event-ID
    });
    source.addEventListener('connection:reset', mine(() => this.resync()));
    for (const type of SESSION_EVENTS) source.addEventListener(type, mine((m) => this.receive(m)));
  }

  /** The stream ended for good (a restart, a proxy's error): start over after a pause. */
  async retry() {
    this.close();
    this.handlers.onStatus('reconnecting');
    const attempt = this.failures;
    this.failures += 1;
    await sleep(backoff(attempt));
    if (!this.source) this.resync();
  }

  receive(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (!event.id || (this.lastId !== null && BigInt(event.id) <= BigInt(this.lastId))) return;
    this.lastId = event.id;
    this.state.apply(event);
    this.handlers.onEvent(event, this.state);
    if (event.type === 'session:ended') {
      // The server ends the stream after it; nothing more will come.
      this.close();
      this.handlers.onStatus('ended');
    }
  }
}

// =============================================================== results ==

/** Bars for a multiple-choice poll; widths slide (CSS transition) as votes come. */
function choiceResults(poll) {
  const rows = new Map();
  const list = h('ol', { class: 'choices', testid: 'choice-results' });
  list.classList.toggle('two-columns', poll.options.length > 8);
  for (const option of poll.options) {
    const fill = h('span', { class: 'choice-fill', testid: 'choice-bar' });
    const count = h('span', { class: 'choice-count', testid: 'choice-count' });
    const percent = h('span', { class: 'choice-percent', testid: 'choice-percent' });
    const row = h(
      'li',
      { class: 'choice', testid: 'choice-row', dataset: { optionId: option.optionId, option: option.optionText } },
      h(
        'div',
        { class: 'choice-line' },
        h('span', { class: 'choice-label', testid: 'choice-label' }, option.optionText),
        h('span', { class: 'choice-figures' }, percent, count),
      ),
      h('div', { class: 'choice-track' }, fill),
    );
    rows.set(option.optionId, { row, fill, count, percent });
    list.append(row);
  }
  return {
    el: list,
    update(results) {
      const byOption = new Map((results.voteBreakdown ?? []).map((b) => [b.optionId, b]));
      const top = Math.max(0, ...[...byOption.values()].map((b) => b.voteCount));
      for (const [optionId, parts] of rows) {
        const b = byOption.get(optionId) ?? { voteCount: 0, percentage: 0 };
        parts.fill.style.width = `${Math.max(0, Math.min(100, b.percentage))}%`;
        parts.row.classList.toggle('leading', top > 0 && b.voteCount === top);
        parts.row.dataset.count = String(b.voteCount);
        setText(parts.percent, formatPercent(b.percentage));
        setText(parts.count, b.voteCount);
      }
    },
  };
}

/** A rating poll: the average, large, beside one column per value. */
function ratingResults(poll) {
  const average = h('strong', { class: 'rating-average-value', testid: 'rating-average' });
  const columns = new Map();
  const chart = h('ol', { class: 'rating-chart', testid: 'rating-chart' });
  for (let value = poll.minRating; value <= poll.maxRating; value += 1) {
    const fill = h('span', { class: 'rating-fill', testid: 'rating-bar' });
    const count = h('span', { class: 'rating-count', testid: 'rating-count' });
    const column = h(
      'li',
      { class: 'rating-column', testid: 'rating-column', dataset: { value: String(value) } },
      count,
      h('span', { class: 'rating-track' }, fill),
      h('span', { class: 'rating-value' }, String(value)),
    );
    columns.set(String(value), { column, fill, count });
    chart.append(column);
  }
  const el = h(
    'div',
    { class: 'rating' },
    h(
      'div',
      { class: 'rating-average' },
      average,
      h('span', { class: 'rating-scale' }, `average on ${poll.minRating}–${poll.maxRating}`),
    ),
    chart,
  );
  return {
    el,
    update(results) {
      setText(average, formatAverage(results.averageRating));
      const distribution = results.ratingDistribution ?? {};
      const top = Math.max(0, ...Object.values(distribution));
      for (const [value, parts] of columns) {
        const n = distribution[value] ?? 0;
        // Scaled to the most chosen value, so the chart uses its height.
        parts.fill.style.height = top ? `${(100 * n) / top}%` : '0%';
        parts.column.dataset.count = String(n);
        parts.column.classList.toggle('leading', top > 0 && n === top);
        setText(parts.count, n);
      }
    },
  };
}

const MAX_ANSWERS = 40;

/** Open-text answers as a cloud: grouped answers grow with their count. */
function textResults() {
  const cloud = h('ul', { class: 'answers', testid: 'text-answers' });
  const empty = h('p', { class: 'answers-empty', testid: 'text-answers-empty' }, 'Answers appear here as they come in.');
  let signature = '';
  return {
    el: h('div', { class: 'text-results' }, empty, cloud),
    update(results) {
      const groups = results.textGroups
        ? results.textGroups.map((g) => ({ text: g.text, count: g.count }))
        : [...(results.textResponses ?? [])].reverse().map((text) => ({ text, count: 1 })); // newest first
      const shown = groups.slice(0, MAX_ANSWERS);
      empty.hidden = shown.length > 0;
      const next = JSON.stringify(shown);
      if (next === signature) return false;
      signature = next;
      const top = Math.max(1, ...shown.map((g) => g.count));
      cloud.replaceChildren(
        ...shown.map((g) => {
          const item = h(
            'li',
            { class: 'answer', testid: 'text-answer', dataset: { count: String(g.count) } },
            h('span', { class: 'answer-text' }, g.text),
            g.count > 1 ? h('span', { class: 'answer-count' }, `×${g.count}`) : null,
          );
          // 1 for a single answer, up to 2 for the most frequent.
          item.style.setProperty('--weight', (1 + (top > 1 ? (g.count - 1) / (top - 1) : 0)).toFixed(2));
          return item;
        }),
      );
      return true;
    },
  };
}

const WITHHELD_UNTIL = {
  after_close: 'They appear when voting closes.',
  after_vote: 'They appear here when voting closes.',
  manual: 'The presenter will show them.',
};

/** While the server withholds a poll's results: the count only. */
function withheldResults(poll) {
  const count = h('span', { class: 'withheld-count', testid: 'withheld-count' });
  const noun = h('span', {});
  const figure = h('p', { class: 'withheld-figure' }, count, ' ', noun);
  const until = WITHHELD_UNTIL[poll.resultsVisibility];
  // The room still sees what it is choosing from, without any counts.
  const options =
    poll.pollType === 'multiple_choice'
      ? h(
          'ol',
          { class: 'choices plain', testid: 'choice-options' },
          poll.options.map((o) => h('li', { class: 'choice-label', testid: 'option-label' }, o.optionText)),
        )
      : null;
  options?.classList.toggle('two-columns', poll.options.length > 8);
  return {
    el: h(
      'div',
      { class: 'withheld-view' },
      options,
      h(
        'div',
        { class: 'withheld', testid: 'results-hidden' },
        h('p', { class: 'withheld-title' }, 'Results hidden'),
        figure,
        until ? h('p', { class: 'withheld-until' }, until) : null,
      ),
    ),
    update(results) {
      const n = results.currentVoteCount;
      figure.hidden = n === null; // not known until the next vote says
      setText(count, n ?? '');
      setText(noun, n === 1 ? 'response' : 'responses');
    },
  };
}

function resultsFor(poll) {
  if (!poll.visible) return withheldResults(poll);
  if (poll.pollType === 'multiple_choice') return choiceResults(poll);
  if (poll.pollType === 'rating_scale') return ratingResults(poll);
  return textResults();
}

// ================================================================= views ==

function formatCountdown(ms) {
  const seconds = Math.max(0, Math.ceil(ms / 1000));
  const m = Math.floor(seconds / 60);
  return `${m}:${String(seconds % 60).padStart(2, '0')}`;
}

function statusText(poll, review) {
  if (poll.status === 'open') return 'Vote now';
  if (review) return 'Earlier results';
  return poll.closeReason === 'timer' ? 'Time is up · final results' : 'Voting closed · final results';
}

/** The poll on screen: question, status, countdown, results, vote count. */
function pollView(poll) {
  const position = h('span', { class: 'poll-position', testid: 'poll-position' });
  const status = h('span', { class: 'poll-status', testid: 'poll-status' });
  const countdown = h('span', { class: 'countdown', testid: 'countdown', hidden: true });
  const votes = h('span', { class: 'votes', testid: 'vote-count' });
  const body = h('div', { class: 'poll-body' });
  const el = h(
    'section',
    { class: 'poll', testid: 'screen-poll', dataset: { pollId: poll.pollId, pollType: poll.pollType } },
    h('header', { class: 'poll-meta' }, position, status, votes, countdown),
    h('h2', { class: 'question', testid: 'screen-question' }, poll.question),
    body,
  );
  let results = null;
  let showing = null; // whether `results` shows the results or the withheld count

  function tick(state, current) {
    const closesAt = current.status === 'open' && current.closesAt ? Date.parse(current.closesAt) : NaN;
    countdown.hidden = !Number.isFinite(closesAt);
    if (countdown.hidden) return;
    const left = closesAt - state.serverNow();
    setText(countdown, formatCountdown(left));
    countdown.dataset.seconds = String(Math.max(0, Math.ceil(left / 1000)));
    countdown.classList.toggle('ending', left < 10000);
  }

  return {
    el,
    tick,
    /** Updates in place; returns true when the layout may have grown. */
    update(state, current, { review }) {
      const polls = state.ordered();
      setText(position, `Poll ${polls.indexOf(current) + 1} of ${polls.length}`);
      el.dataset.status = current.status;
      status.dataset.state = current.status;
      setText(status, statusText(current, review));
      let grew = false;
      if (showing !== current.visible) {
        results = resultsFor(current);
        body.replaceChildren(results.el);
        showing = current.visible;
        grew = true;
      }
      if (results.update(current.results)) grew = true;
      const n = current.results.currentVoteCount;
      votes.hidden = n === null;
      votes.dataset.count = String(n ?? '');
      if (n !== null) setText(votes, current.pollType === 'open_text' ? plural(n, 'answer') : plural(n, 'vote'));
      tick(state, current);
      return grew;
    },
  };
}

function joinLink(state) {
  return state.session.joinUrl || `${location.origin}/join?code=${encodeURIComponent(state.session.slug)}`;
}

const bareUrl = (url) => url.replace(/^https?:\/\//, '');

/** No poll yet: where to join, in the middle of the screen. */
function welcomeView(state) {
  return {
    el: h(
      'section',
      { class: 'welcome', testid: 'welcome' },
      h('p', { class: 'welcome-title' }, state.session.title),
      h('p', { class: 'welcome-join' }, 'Join at ', h('strong', { class: 'welcome-url' }, bareUrl(joinLink(state)))),
      h('p', { class: 'welcome-wait', testid: 'welcome-wait' }, 'Waiting for the first question…'),
    ),
    update: () => false,
    tick() {},
  };
}

function endedView(state) {
  const polls = [...state.polls.values()].filter((p) => p.status !== 'draft').length;
  return {
    el: h(
      'section',
      { class: 'ended', testid: 'session-ended' },
      h('h2', { class: 'ended-title' }, 'Session ended — thank you'),
      h(
        'p',
        { class: 'ended-figures', testid: 'ended-figures' },
        `${plural(state.participantCount, 'participant')} · ${plural(state.totalResponses(), 'response')} to ${plural(polls, 'poll')}`,
      ),
    ),
    update: () => false,
    tick() {},
  };
}

function problemView(title, text) {
  return h(
    'section',
    { class: 'problem', testid: 'screen-problem' },
    h('h2', { class: 'problem-title' }, title),
    h('p', { class: 'problem-text' }, text),
  );
}

// ================================================================ screen ==

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
