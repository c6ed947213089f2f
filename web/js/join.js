// The participant view: /join?code=<slug>. Joining stores this tab's
// participant token in sessionStorage, so each tab is its own participant
// and a reload stays in the session. The active poll appears as the
// presenter opens it; a vote is confirmed or refused by the HTTP answer and
// again by the participant's own events on the stream.
//
// Once a vote is accepted the poll's controls lock, showing the choice; after
// a reload the snapshot's `myVote` (asked for with this participant's token)
// brings both back. Results appear only when the server sends them (a poll's
// resultsVisibility); a timed poll counts down and locks at its end.

import { api, tabStore, normalizeCode } from './api.js';
import { h, $, setText, show, connectionBadge, countdown, plural } from './dom.js';
import { SessionFeed } from './feed.js';
import { resultsPanel } from './results.js';

const byTestId = (id, root = document) => $(`[data-testid="${id}"]`, root);
const code = normalizeCode(new URLSearchParams(location.search).get('code'));

const steps = {
  code: document.getElementById('code-step'),
  name: document.getElementById('name-step'),
  live: document.getElementById('live'),
  problem: document.getElementById('problem'),
};
const connection = byTestId('connection-status');
const setConnection = connectionBadge(connection);

function step(name) {
  for (const [key, el] of Object.entries(steps)) el.hidden = key !== name;
  connection.hidden = name !== 'live';
}

function problem(title, text) {
  setText(byTestId('problem-title'), title);
  setText(byTestId('problem-text'), text);
  step('problem');
}

const REASONS = {
  duplicate_vote: 'you have already voted on this poll',
  poll_closed: 'this poll is closed',
  poll_not_active: 'this poll is not open yet',
  invalid_option: 'that choice is not one of this poll’s options',
  invalid_rating: 'that rating is outside the scale',
  invalid_text: 'an answer must be 1 to 500 characters',
  rate_limited: 'too many votes at once; wait a moment and retry',
};

// ------------------------------------------------------- in the session --

let me = null; // { token, sessionId, participantId, displayName }
let state = null;
let voted = new Set();
const answers = new Map(); // pollId -> the voteData this participant sent
const expired = new Set(); // timed polls whose time ran out here before the server said so
const messages = new Map(); // pollId -> { kind, text }
let lastClosedPollId = null;
let current = null; // the card on screen: { key, pollId, el, showMessage, update }

const COUNTED = '✓ Your vote was counted.';

function setMessage(pollId, kind, text) {
  messages.set(pollId, { kind, text });
  if (current?.pollId === pollId) current.showMessage();
}

function accepted(pollId, voteData) {
  if (voteData && !answers.has(pollId)) answers.set(pollId, voteData);
  if (!voted.has(pollId)) {
    voted.add(pollId);
    tabStore.saveVoted(me.participantId, voted);
  }
  setMessage(pollId, 'accepted', COUNTED);
  render();
}

/** The votes the server remembers for this participant (snapshot `myVote`). */
function restoreVotes() {
  for (const poll of state.polls.values()) {
    if (!poll.myVote) continue;
    const { voteId, submittedAt, ...voteData } = poll.myVote;
    answers.set(poll.pollId, voteData);
    voted.add(poll.pollId);
  }
  for (const pollId of voted) if (!messages.has(pollId)) messages.set(pollId, { kind: 'accepted', text: COUNTED });
}

function rejected(pollId, reason, message) {
  if (reason === 'duplicate_vote') return accepted(pollId, null);
  setMessage(pollId, 'rejected', `Not counted: ${REASONS[reason] ?? message} (${reason})`);
}

async function submitVote(poll, voteData, button) {
  button.disabled = true;
  setMessage(poll.pollId, 'pending', 'Sending…');
  try {
    const confirmation = await api.vote(poll.pollId, me.token, voteData);
    state.apply({ type: 'vote:accepted', payload: confirmation });
    accepted(poll.pollId, voteData);
  } catch (error) {
    button.disabled = false;
    if (error.code in REASONS) rejected(poll.pollId, error.code, error.message);
    else setMessage(poll.pollId, 'error', error.message);
  }
}

function choiceInputs(poll) {
  const type = poll.allowMultiple ? 'checkbox' : 'radio';
  return poll.options.map((option) =>
    h(
      'label',
      { class: 'choice', testid: 'vote-option', dataset: { option: option.optionText, optionId: option.optionId } },
      h('input', { type, name: 'choice', value: option.optionId }),
      h('span', {}, option.optionText),
    ),
  );
}

function ratingInputs(poll) {
  const count = poll.maxRating - poll.minRating + 1;
  if (count > 11) {
    return [
      h('input', {
        type: 'number',
        name: 'rating',
        class: 'rating-number',
        testid: 'rating-input',
        min: poll.minRating,
        max: poll.maxRating,
        required: true,
      }),
    ];
  }
  const values = Array.from({ length: count }, (_, i) => poll.minRating + i);
  return [
    h(
      'div',
      { class: 'rating-scale' },
      values.map((v) =>
        h(
          'label',
          { class: 'choice rating', testid: 'rating-option', dataset: { value: String(v) } },
          h('input', { type: 'radio', name: 'rating', value: String(v) }),
          h('span', {}, String(v)),
        ),
      ),
    ),
    h('p', { class: 'scale-ends muted small' }, h('span', {}, `${poll.minRating} = lowest`), h('span', {}, `${poll.maxRating} = highest`)),
  ];
}

function textInputs() {
  const counter = h('span', { class: 'muted small counter' }, '0 / 500');
  const area = h('textarea', {
    name: 'text',
    rows: 3,
    maxlength: 500,
    testid: 'text-input',
    placeholder: 'Type your answer',
  });
  area.addEventListener('input', () => setText(counter, `${area.value.length} / 500`));
  return [area, counter];
}

function readVote(poll, form) {
  if (poll.pollType === 'multiple_choice') {
    const ids = [...form.querySelectorAll('input[name="choice"]:checked')].map((i) => i.value);
    return ids.length ? { selectedOptionIds: ids } : null;
  }
  if (poll.pollType === 'rating_scale') {
    const input = form.querySelector('input[name="rating"]:checked') ?? form.querySelector('input[type="number"]');
    if (!input || input.value === '') return null;
    return { ratingValue: Number(input.value) };
  }
  const text = form.elements.text.value.trim();
  return text ? { textResponse: text } : null;
}

const PROMPT = {
  multiple_choice: (p) => (p.allowMultiple ? 'Choose one or more' : 'Choose one'),
  rating_scale: (p) => `Rate from ${p.minRating} to ${p.maxRating}`,
  open_text: () => 'Your answer',
};

/** Shows a sent vote in the (locked) inputs: the choices checked, the rating, the text. */
function fillVote(form, voteData) {
  for (const id of voteData.selectedOptionIds ?? []) {
    const input = form.querySelector(`input[name="choice"][value="${CSS.escape(id)}"]`);
    if (input) input.checked = true;
  }
  if (voteData.ratingValue !== undefined) {
    const value = String(voteData.ratingValue);
    const radio = form.querySelector(`input[name="rating"][value="${CSS.escape(value)}"]`);
    if (radio) radio.checked = true;
    const number = form.querySelector('input[type="number"]');
    if (number) number.value = value;
  }
  if (voteData.textResponse !== undefined && form.elements.text) {
    form.elements.text.value = voteData.textResponse;
    form.elements.text.dispatchEvent(new Event('input')); // its character counter
  }
}

/** The answer in words: "Lisbon", "4 on 1–5", or the text itself. */
function describeVote(poll, voteData) {
  if (voteData.selectedOptionIds) {
    const names = new Map(poll.options.map((o) => [o.optionId, o.optionText]));
    return voteData.selectedOptionIds.map((id) => names.get(id) ?? '?').join(', ');
  }
  if (voteData.ratingValue !== undefined) return `${voteData.ratingValue} on ${poll.minRating}–${poll.maxRating}`;
  return voteData.textResponse ?? '';
}

function voteForm(poll, locked) {
  const button = h('button', { class: 'primary', type: 'submit', testid: 'submit-vote', hidden: locked }, 'Send vote');
  const inputs =
    poll.pollType === 'multiple_choice'
      ? choiceInputs(poll)
      : poll.pollType === 'rating_scale'
        ? ratingInputs(poll)
        : textInputs(poll);
  const fieldset = h('fieldset', { disabled: locked }, h('legend', {}, PROMPT[poll.pollType](poll)), inputs);
  const form = h('form', { class: 'vote-form', testid: 'vote-form', novalidate: true }, fieldset, button);
  const answer = answers.get(poll.pollId);
  if (answer) fillVote(form, answer);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    if (fieldset.disabled) return;
    const voteData = readVote(poll, form);
    if (!voteData) {
      setMessage(poll.pollId, 'error', poll.pollType === 'open_text' ? 'Write an answer first.' : 'Make a choice first.');
      return;
    }
    submitVote(poll, voteData, button);
  });
  return {
    el: form,
    lock() {
      fieldset.disabled = true;
      button.disabled = true;
    },
  };
}

const WITHHELD_TEXT = {
  after_vote: 'Results appear once you have voted.',
  after_close: 'Results will be shown when the poll closes.',
  manual: 'Results will be shown later.',
};

/** Results when the server sends them; else a note saying when they come, with the count. */
function resultsBox(poll, open) {
  const results = resultsPanel(poll);
  const visible = h('div', {}, h('p', { class: 'eyebrow' }, open ? 'Live results' : 'Final results'), results.el);
  const note = h('p', { class: 'withheld', testid: 'results-withheld' });
  const count = h('p', { class: 'muted small', testid: 'vote-count' });
  const el = h('div', { class: 'participant-results', testid: 'participant-results' }, visible, note, count);
  return {
    el,
    update(p) {
      const mine = voted.has(p.pollId);
      show(el, mine || p.status !== 'open');
      show(visible, p.resultsVisible);
      show(note, !p.resultsVisible);
      show(count, !p.resultsVisible);
      setText(note, WITHHELD_TEXT[p.resultsVisibility] ?? WITHHELD_TEXT.manual);
      setText(count, `${plural(p.count, 'vote')} so far.`);
      if (p.resultsVisible) results.update(p);
    },
  };
}

/** What the card is built from: a change rebuilds it (a vote counted, its answer known, the poll closed). */
function cardKey(poll) {
  return `${poll.pollId}/${poll.status}/${voted.has(poll.pollId)}/${answers.has(poll.pollId)}`;
}

/** The card of the poll shown: the open one (with its form), or the last closed one. */
function pollCard(poll) {
  const open = poll.status === 'open';
  const mine = voted.has(poll.pollId);
  const locked = mine || expired.has(poll.pollId);
  const message = h('p', { class: 'vote-message', testid: 'vote-message', role: 'status', hidden: true });
  const closedNote = h('p', { class: 'voting-closed', testid: 'voting-closed', hidden: open && !expired.has(poll.pollId) }, 'Voting closed');
  const clock = h('span', { class: 'countdown', testid: 'countdown', hidden: true });
  const form = open ? voteForm(poll, locked) : null;
  const timeLeft = countdown(clock, () => state.serverNow(), () => {
    // The server closes it now; until its poll:closed arrives, no more sending.
    expired.add(poll.pollId);
    form?.lock();
    show(closedNote, true);
  });
  const answer = answers.get(poll.pollId);
  const yours =
    answer && (!open || poll.pollType === 'open_text')
      ? h('p', { class: 'my-answer', testid: 'my-answer' }, 'Your answer: ', h('strong', {}, describeVote(poll, answer)))
      : null;
  const results = resultsBox(poll, open);
  const el = h(
    'section',
    {
      class: `card poll participant-poll${open ? ' is-open' : ''}`,
      testid: open ? 'active-poll' : 'last-poll',
      dataset: { pollId: poll.pollId, status: poll.status, locked: String(locked) },
    },
    h(
      'header',
      { class: 'poll-head' },
      h('span', { class: 'pill', dataset: { state: poll.status } }, open ? 'open · vote now' : 'closed'),
      clock,
    ),
    h('h2', { class: 'poll-question', testid: 'poll-question-text' }, poll.question),
    form?.el,
    closedNote,
    message,
    yours,
    results.el,
  );
  return {
    key: cardKey(poll),
    pollId: poll.pollId,
    el,
    showMessage() {
      const m = messages.get(poll.pollId);
      show(message, Boolean(m));
      if (m) {
        message.dataset.kind = m.kind;
        setText(message, m.text);
      }
    },
    update(p) {
      timeLeft.set(p.status === 'open' ? p.closesAt : null);
      results.update(p);
    },
    remove() {
      timeLeft.stop();
      el.remove();
    },
  };
}

function shownPoll() {
  return state.activePoll() ?? (lastClosedPollId ? state.polls.get(lastClosedPollId) : null) ?? null;
}

function render() {
  if (!state) return;
  const { session } = state;
  document.title = `${session.title} — pollcast`;
  setText(byTestId('session-title'), session.title);
  const count = byTestId('participant-count');
  setText(count, state.participantCount);
  count.dataset.count = String(state.participantCount);
  setText(byTestId('participant-label'), state.participantCount === 1 ? 'person here' : 'people here');
  show(byTestId('session-ended'), session.status === 'ended');

  const poll = shownPoll();
  const key = poll ? cardKey(poll) : null;
  if (current?.key !== key) {
    current?.remove();
    current = poll ? pollCard(poll) : null;
    if (current) {
      document.getElementById('poll-slot').append(current.el);
      current.showMessage();
    }
  }
  current?.update(poll);
  show(byTestId('waiting'), session.status !== 'ended' && !state.activePoll());
  setText(
    byTestId('waiting-text'),
    session.status === 'draft' ? 'The session has not started yet. Polls appear here by themselves.' : 'Waiting for the presenter to open a poll…',
  );
}

// An after_vote poll: once this participant has voted it may see the
// results, but the session's broadcast carries only the count (others have
// not voted yet), so the bars would freeze at this vote. A withheld frame
// with a count past the bars' brings GET /v1/polls/{id}/results instead: at
// most one request per poll every 2 s, the last frame of a burst answered
// by a request at the end of its 2 s.
const RESULTS_REFRESH_MS = 2000;
const refreshes = new Map(); // pollId -> { last, timer }

function needsResults(poll) {
  return (
    poll?.status === 'open' &&
    poll.resultsVisibility === 'after_vote' &&
    poll.resultsVisible &&
    voted.has(poll.pollId) &&
    poll.count > poll.results.currentVoteCount
  );
}

function refreshResults(pollId) {
  const entry = refreshes.get(pollId) ?? { last: 0, timer: null };
  refreshes.set(pollId, entry);
  if (entry.timer) return; // one is due already
  entry.timer = setTimeout(async () => {
    entry.timer = null;
    if (!needsResults(state?.polls.get(pollId))) return;
    entry.last = Date.now();
    try {
      const results = await api.results(pollId, me.token);
      state.apply({ type: 'vote:accepted', payload: { ...results, pollId } });
      render();
    } catch {
      /* withheld again, or the network: the next frame asks again */
    }
  }, Math.max(0, entry.last + RESULTS_REFRESH_MS - Date.now()));
}

function onEvent(event) {
  const p = event.payload ?? {};
  const own = event.topic?.startsWith('participant:');
  if (event.type === 'poll:closed') lastClosedPollId = p.pollId;
  if (event.type === 'vote:accepted' && p.resultsWithheld && needsResults(state.polls.get(p.pollId))) {
    refreshResults(p.pollId);
  }
  if (own && event.type === 'vote:accepted') return accepted(p.pollId, null);
  if (own && event.type === 'vote:rejected') rejected(p.pollId, p.reason, p.message);
  if (own && event.type === 'error:general') setMessage(current?.pollId, 'error', p.message);
  render();
}

function enter(participant) {
  me = participant;
  voted = tabStore.votedPolls(me.participantId);
  setText(byTestId('me'), me.displayName || 'here without a name');
  step('live');
  const feed = new SessionFeed({
    key: me.sessionId,
    token: me.token,
    onStatus: setConnection,
    onSnapshot(fresh) {
      state = fresh;
      restoreVotes();
      const closed = state.orderedPolls().filter((poll) => poll.status === 'closed');
      lastClosedPollId = closed.length ? closed[closed.length - 1].pollId : null;
      current?.remove();
      current = null;
      render();
    },
    onEvent,
    onFatal(error) {
      feed.stop();
      if (error.status === 401 || error.status === 403) {
        tabStore.forgetParticipant(code);
        problem('Your pass has expired', 'Open the join link again to rejoin the session.');
      } else {
        problem('Session not found', error.message);
      }
    },
  }).start();
}

// ------------------------------------------------------------ joining ----

async function showJoin() {
  step('name');
  const title = byTestId('join-session-title');
  let snapshot;
  try {
    snapshot = await api.snapshot(code);
  } catch (error) {
    if (error.status === 404 || error.status === 400) {
      return problem('No such session', `No session has the join code “${code}”. Check the code and try again. (${error.message})`);
    }
    setText(title, `code ${code}`);
    return;
  }
  setText(title, snapshot.title);
  if (snapshot.status === 'ended') {
    problem('This session has ended', `“${snapshot.title}” is over; it takes no more participants.`);
  }
}

function wireJoin() {
  const form = document.getElementById('join-form');
  const error = byTestId('join-error');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      const displayName = form.elements.displayName.value.trim();
      const joined = await api.join(code, displayName || undefined);
      const participant = {
        token: joined.participantToken,
        sessionId: joined.sessionId,
        participantId: joined.participantId,
        displayName: joined.displayName,
      };
      tabStore.saveParticipant(code, participant);
      enter(participant);
    } catch (e) {
      error.textContent = e.code === 'conflict' ? 'This session has ended; it takes no more participants.' : e.message;
      error.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

function wireCode() {
  const form = document.getElementById('code-form');
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const typed = normalizeCode(form.elements.code.value);
    if (typed) location.assign(`/join?code=${encodeURIComponent(typed)}`);
  });
}

if (!code) {
  wireCode();
  step('code');
} else {
  const saved = tabStore.participant(code);
  if (saved) {
    enter(saved);
  } else {
    wireJoin();
    showJoin();
  }
}
