// The screen's connection to the server: a snapshot, then the public
// session stream from its lastEventId; duplicate events are skipped, a
// stream that ends for good or a connection:reset brings a fresh snapshot,
// with backoff. It feeds a ScreenState and tells screen.js what changed.

import { api } from './api.js';
import { ScreenState } from './screen-state.js';

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
export class ScreenFeed {
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
