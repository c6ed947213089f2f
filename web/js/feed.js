// Following a session: one snapshot, then the session's event stream from
// exactly the snapshot's `lastEventId`, applied to a local copy of the state.
//
// Recovery, without reloading the page:
// - a dropped stream: EventSource reconnects by itself with Last-Event-ID
//   while its readyState is CONNECTING, and the server replays what was missed;
// - a stream that ends CLOSED (an error answer, a proxy's 502…): a new
//   EventSource after a growing backoff, from the last event id seen;
// - `connection:reset` (the id is too old or unknown): a fresh snapshot,
//   then a stream from its `lastEventId`.
// - `session:ended`: the server ends the stream right after it (and would
//   answer 204 to a reconnect): the feed stops, its status `ended`.
// Stored events carry increasing ids, so any event at or below the last id
// applied is a duplicate and skipped.
//
// Results a viewer may not see yet (a poll's resultsVisibility) never reach
// it: its snapshot has `results: null` and its `vote:accepted` frames say
// `resultsWithheld` and carry only the count. The state keeps the last
// results it was allowed to see apart from the count (`poll.count`), and
// `poll.resultsVisible` says whether it has any. A presenter gets full
// frames on its own topic beside the withheld ones.

import { api } from './api.js';

const STORED_EVENTS = [
  'session:created',
  'session:started',
  'session:ended',
  'poll:created',
  'poll:activated',
  'poll:closed',
  'poll:results_revealed',
  'vote:accepted',
  'vote:rejected',
  'participant:joined',
  'participant:disconnected',
  'error:general',
];

/** The fields of an event payload that are a poll's results. */
export const RESULT_FIELDS = [
  'currentVoteCount',
  'voteBreakdown',
  'averageRating',
  'ratingDistribution',
  'textResponses',
  'textGroups',
];
const hasResults = (payload) => RESULT_FIELDS.some((field) => field !== 'currentVoteCount' && field in payload);

function emptyResults(poll) {
  const distribution = {};
  if (poll.pollType === 'rating_scale') {
    for (let v = poll.minRating; v <= poll.maxRating; v += 1) distribution[v] = 0;
  }
  return {
    currentVoteCount: 0,
    voteBreakdown: (poll.options ?? []).map((o) => ({ optionId: o.optionId, voteCount: 0, percentage: 0 })),
    averageRating: null,
    ratingDistribution: poll.pollType === 'rating_scale' ? distribution : null,
    textResponses: poll.pollType === 'open_text' ? [] : undefined,
  };
}

/** A poll of the snapshot, with the fields the views rely on filled in. */
function fromSnapshot(poll) {
  const visible = poll.results !== null && poll.results !== undefined;
  return {
    ...poll,
    resultsVisible: poll.resultsVisible ?? visible,
    resultsRevealed: poll.resultsRevealed ?? (poll.resultsVisibility ?? 'always') === 'always',
    closesAt: poll.closesAt ?? null,
    myVote: poll.myVote ?? null,
    count: poll.results?.currentVoteCount ?? poll.currentVoteCount ?? poll.voteCount ?? 0,
    results: { ...emptyResults(poll), ...(poll.results ?? {}) },
  };
}

/** Takes the result fields of `payload` unless they are older than those shown. */
function takeResults(poll, payload) {
  poll.count = Math.max(poll.count, payload.currentVoteCount ?? 0);
  if (payload.resultsWithheld || !hasResults(payload)) return;
  if ((payload.currentVoteCount ?? 0) < poll.results.currentVoteCount) return; // counts only grow
  for (const field of RESULT_FIELDS) if (field in payload) poll.results[field] = payload[field];
  poll.resultsVisible = true;
}

/** The session as the views show it: the snapshot, kept current by events. */
export class SessionState {
  constructor(snapshot) {
    this.session = {
      sessionId: snapshot.sessionId,
      title: snapshot.title,
      slug: snapshot.slug,
      status: snapshot.status,
      createdAt: snapshot.createdAt,
      startedAt: snapshot.startedAt,
      endedAt: snapshot.endedAt,
      joinUrl: snapshot.joinUrl,
    };
    this.storage = snapshot.storage ?? null; // "memory" | "postgres" (older servers: absent)
    // Server clock minus this clock, for countdowns to a poll's closesAt.
    this.clockOffset = snapshot.serverTime ? Date.parse(snapshot.serverTime) - Date.now() : 0;
    this.participantCount = snapshot.participantCount;
    this.activePollId = snapshot.activePollId;
    this.polls = new Map();
    for (const poll of snapshot.polls) this.polls.set(poll.pollId, fromSnapshot(poll));
  }

  /** The server's clock now, in ms since the epoch, as well as this page can tell. */
  serverNow() {
    return Date.now() + this.clockOffset;
  }

  /** Polls in their session order. */
  orderedPolls() {
    return [...this.polls.values()].sort((a, b) => a.sequenceOrder - b.sequenceOrder);
  }

  activePoll() {
    return this.activePollId ? this.polls.get(this.activePollId) ?? null : null;
  }

  /** Applies one stored event; returns the poll id it touched, if any. */
  apply(event) {
    const p = event.payload ?? {};
    switch (event.type) {
      case 'session:started':
        this.session.status = 'active';
        this.session.startedAt = p.startedAt;
        if (typeof p.participantCount === 'number') this.participantCount = p.participantCount;
        return null;
      case 'session:ended':
        this.session.status = 'ended';
        this.session.endedAt = p.endedAt;
        this.activePollId = null;
        if (typeof p.finalParticipantCount === 'number') this.participantCount = p.finalParticipantCount;
        return null;
      case 'poll:created': {
        const visibility = p.resultsVisibility ?? 'always';
        const poll = { ...p, status: 'draft', closesAt: null, myVote: null, count: 0 };
        poll.resultsVisibility = visibility;
        poll.resultsRevealed = p.resultsRevealed ?? visibility === 'always';
        poll.resultsVisible = poll.resultsRevealed;
        poll.results = emptyResults(poll);
        if (!this.polls.has(p.pollId)) this.polls.set(p.pollId, poll);
        return p.pollId;
      }
      case 'poll:activated': {
        const poll = this.polls.get(p.pollId);
        if (poll) {
          poll.status = 'open';
          poll.activatedAt = p.activatedAt ?? poll.activatedAt;
          poll.closesAt = p.closesAt ?? null;
        }
        this.activePollId = p.pollId;
        return p.pollId;
      }
      case 'poll:closed': {
        const poll = this.polls.get(p.pollId);
        if (poll) {
          poll.status = 'closed';
          poll.closedAt = p.closedAt;
          poll.closeReason = p.reason ?? null;
          poll.count = Math.max(poll.count, p.finalVoteCount ?? 0);
          if (poll.resultsVisible) {
            poll.results.currentVoteCount = Math.max(poll.results.currentVoteCount, p.finalVoteCount ?? 0);
          }
        }
        if (this.activePollId === p.pollId) this.activePollId = null;
        return p.pollId;
      }
      case 'vote:accepted': {
        const poll = this.polls.get(p.pollId);
        if (poll) takeResults(poll, p);
        return p.pollId;
      }
      case 'poll:results_revealed': {
        const poll = this.polls.get(p.pollId);
        if (poll) {
          poll.resultsRevealed = true;
          takeResults(poll, { ...p, resultsWithheld: false });
          poll.resultsVisible = true;
        }
        return p.pollId;
      }
      case 'participant:joined':
      case 'participant:disconnected':
        if (typeof p.participantCount === 'number') this.participantCount = p.participantCount;
        return null;
      default:
        return null;
    }
  }
}

/** 1 s, 2 s, 4 s … up to 15 s, with some jitter so tabs do not retry in step. */
function backoff(attempt) {
  const base = Math.min(15000, 1000 * 2 ** Math.min(attempt, 4));
  return base / 2 + Math.random() * (base / 2);
}

export class SessionFeed {
  /**
   * @param {object} o
   * @param {string} o.key session id or join code
   * @param {string} [o.token] presenter or participant token
   * @param {(state: SessionState) => void} o.onSnapshot a fresh state
   * @param {(event: object, state: SessionState) => void} o.onEvent after each stored event is applied
   * @param {(status: 'connecting'|'live'|'reconnecting'|'failed'|'ended') => void} o.onStatus
   * @param {(error: Error) => void} o.onFatal the session or the token is gone
   */
  constructor({ key, token, onSnapshot, onEvent, onStatus, onFatal }) {
    this.key = key;
    this.token = token ?? null;
    this.handlers = { onSnapshot, onEvent, onStatus, onFatal };
    this.source = null;
    this.lastId = null;
    this.state = null;
    this.failures = 0;
    this.everLive = false;
    this.stopped = false;
    this.wake = null;
    window.addEventListener('online', () => this.wake?.());
  }

  start() {
    this.resync();
    return this;
  }

  stop() {
    this.stopped = true;
    this.closeSource();
  }

  status(state) {
    if (state === 'live') this.everLive = true;
    this.handlers.onStatus?.(state);
  }

  closeSource() {
    if (this.source) {
      this.source.close();
      this.source = null;
    }
  }

  /** Waits `ms`, or less if the browser reports it is back online. */
  pause(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    }).finally(() => {
      this.wake = null;
    });
  }

  /** Snapshot first, then the stream from the snapshot's lastEventId. */
  async resync() {
    this.closeSource();
    this.status(this.everLive ? 'reconnecting' : 'connecting');
    let snapshot;
    for (let attempt = 0; !this.stopped; attempt += 1) {
      try {
        snapshot = await api.snapshot(this.key, this.token);
        break;
      } catch (error) {
        if ([400, 401, 403, 404].includes(error.status)) {
          this.status('failed');
          this.handlers.onFatal?.(error);
          return;
        }
        this.status('reconnecting');
        await this.pause(backoff(attempt));
      }
    }
    if (this.stopped) return;
    this.key = snapshot.sessionId;
    this.lastId = snapshot.lastEventId;
    this.state = new SessionState(snapshot);
    this.handlers.onSnapshot?.(this.state);
    this.open();
  }

  streamUrl() {
    const params = new URLSearchParams();
    if (this.lastId !== null) params.set('lastEventId', this.lastId);
    if (this.token) params.set('access_token', this.token);
    return `/v1/sessions/${encodeURIComponent(this.key)}/events?${params}`;
  }

  open() {
    if (this.stopped) return;
    const source = new EventSource(this.streamUrl());
    this.source = source;
    const mine = (fn) => (message) => {
      if (this.source === source) fn(message);
    };
    source.onopen = mine(() => {
      this.failures = 0;
      this.status('live');
    });
    source.onerror = mine(() => {
      if (source.readyState === EventSource.CLOSED) this.reopen();
      else this.status('reconnecting'); // the browser retries with Last-Event-ID
    });
    source.addEventListener('connection:reset', mine(() => this.resync()));
    for (const type of STORED_EVENTS) source.addEventListener(type, mine((m) => this.receive(m)));
  }

  receive(message) {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (!event.id) return;
    if (this.lastId !== null && BigInt(event.id) <= BigInt(this.lastId)) return;
    this.lastId = event.id;
    this.state.apply(event);
    this.handlers.onEvent?.(event, this.state);
    if (event.type === 'session:ended') this.finish();
  }

  /** The session is over: nothing more will come, so stop listening. */
  finish() {
    this.stop();
    this.status('ended');
  }

  /**
   * The EventSource gave up (CLOSED). Ask the server why once: a 401, 403 or
   * 404 will not heal by retrying; anything else (a restart, a proxy error,
   * no network) is retried from the last id after a backoff.
   */
  async reopen() {
    this.closeSource();
    this.status('reconnecting');
    const attempt = this.failures;
    this.failures += 1;
    await this.pause(backoff(attempt));
    if (this.stopped || this.source) return;
    const verdict = await this.probe();
    if (this.stopped) return;
    if (verdict) {
      this.status('failed');
      this.handlers.onFatal?.(verdict);
      return;
    }
    if (!this.source) this.open();
  }

  async probe() {
    const abort = new AbortController();
    try {
      const response = await fetch(this.streamUrl(), { signal: abort.signal, cache: 'no-store' });
      if (response.status === 204) {
        // The session has ended and this page has seen all of it.
        this.finish();
        return null;
      }
      if ([401, 403, 404].includes(response.status)) {
        const body = await response.json().catch(() => null);
        const err = new Error(body?.error?.message ?? `stream refused (${response.status})`);
        err.status = response.status;
        err.code = body?.error?.code;
        return err;
      }
    } catch {
      /* unreachable: retry */
    } finally {
      abort.abort();
    }
    return null;
  }
}
