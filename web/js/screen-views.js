// What fills the screen's stage: the current poll (position, status,
// countdown, question, results), the welcome before the first poll, the
// thank-you after the session ends, and the problem notice. Each view is
// {el, update, tick}; screen.js swaps them as the session moves on.

import { h, setText, plural } from './dom.js';
import { resultsFor } from './screen-results.js';

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
export function pollView(poll) {
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

export function joinLink(state) {
  return state.session.joinUrl || `${location.origin}/join?code=${encodeURIComponent(state.session.slug)}`;
}

export const bareUrl = (url) => url.replace(/^https?:\/\//, '');

/** No poll yet: where to join, in the middle of the screen. */
export function welcomeView(state) {
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

export function endedView(state) {
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

export function problemView(title, text) {
  return h(
    'section',
    { class: 'problem', testid: 'screen-problem' },
    h('h2', { class: 'problem-title' }, title),
    h('p', { class: 'problem-text' }, text),
  );
}
