// The screen's model of a session: one snapshot, then each event applied
// in order. It knows which polls exist, which one is open, each poll's
// results as far as the room may see them (a withheld poll keeps only its
// count) and the server's clock offset for countdowns. No DOM here.

import { RESULT_FIELDS } from './feed.js';


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
  // poll:created names the visibility only: a new poll is public only when
  // its results always are (the others wait for a vote, the close or the
  // presenter).
  if (typeof raw.resultsVisibility === 'string') return raw.resultsVisibility === 'always';
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
export class ScreenState {
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
