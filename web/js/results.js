// Live results of one poll, shared by both views: bars with counts and
// percentages for choices, the distribution and average for ratings, the
// answers for open text. Built once per poll and updated in place, so a
// stream of results does not rebuild the page under the user's cursor.

import { h, setText, plural, formatPercent, formatAverage } from './dom.js';

function bar(testid) {
  const fill = h('span', { class: 'bar-fill', testid });
  return { track: h('span', { class: 'bar-track' }, fill), fill };
}

function choiceResults(poll) {
  const rows = new Map();
  const list = h('ol', { class: 'result-rows' });
  for (const option of poll.options) {
    const { track, fill } = bar('result-bar');
    const count = h('span', { class: 'result-count', testid: 'result-count' });
    const percent = h('span', { class: 'result-percent', testid: 'result-percent' });
    const row = h(
      'li',
      { class: 'result-row', testid: 'result-row', dataset: { optionId: option.optionId, option: option.optionText } },
      h('span', { class: 'result-label', testid: 'result-label' }, option.optionText),
      track,
      h('span', { class: 'result-figures' }, count, percent),
    );
    rows.set(option.optionId, { row, fill, count, percent });
    list.append(row);
  }
  return {
    el: list,
    update(results) {
      updateBars(rows, results);
    },
  };
}

function ratingResults(poll) {
  const average = h('strong', { class: 'average-value', testid: 'result-average' });
  const rows = new Map();
  const list = h('ol', { class: 'result-rows rating-rows' });
  for (let value = poll.minRating; value <= poll.maxRating; value += 1) {
    const { track, fill } = bar('result-bar');
    const count = h('span', { class: 'result-count', testid: 'result-count' });
    const row = h(
      'li',
      { class: 'result-row', testid: 'rating-row', dataset: { value: String(value) } },
      h('span', { class: 'result-label' }, String(value)),
      track,
      h('span', { class: 'result-figures' }, count),
    );
    rows.set(String(value), { row, fill, count });
    list.append(row);
  }
  const el = h(
    'div',
    { class: 'rating-results' },
    h('p', { class: 'average' }, 'Average ', average, h('span', { class: 'muted' }, ` on ${poll.minRating}–${poll.maxRating}`)),
    list,
  );
  return {
    el,
    update(results) {
      setText(average, formatAverage(results.averageRating));
      const distribution = results.ratingDistribution ?? {};
      const total = results.currentVoteCount || 0;
      for (const [value, parts] of rows) {
        const n = distribution[value] ?? 0;
        parts.fill.style.width = total ? `${(100 * n) / total}%` : '0%';
        parts.row.dataset.count = String(n);
        setText(parts.count, n);
      }
    },
  };
}

/**
 * Sets each option's bar, count and share from `results.voteBreakdown`,
 * marking the leading options. `rows` maps an option id to its
 * `{row, fill, count, percent}` elements (the presenter's, a phone's or the
 * screen's).
 */
export function updateBars(rows, results) {
  const byOption = new Map((results.voteBreakdown ?? []).map((b) => [b.optionId, b]));
  const top = Math.max(0, ...[...byOption.values()].map((b) => b.voteCount));
  for (const [optionId, parts] of rows) {
    const b = byOption.get(optionId) ?? { voteCount: 0, percentage: 0 };
    parts.fill.style.width = `${Math.max(0, Math.min(100, b.percentage))}%`;
    parts.row.classList.toggle('leading', top > 0 && b.voteCount === top);
    parts.row.dataset.count = String(b.voteCount);
    setText(parts.count, b.voteCount);
    setText(parts.percent, formatPercent(b.percentage));
  }
}

/**
 * One answer line; with a count when several people gave the same answer,
 * and a Hide button when `onHide` is given (the presenter's view).
 */
function answerItem(text, count, onHide) {
  let hide = null;
  if (onHide) {
    hide = h('button', { class: 'link-button hide-answer', type: 'button', testid: 'hide-answer' }, 'Hide');
    hide.title = 'Hide this answer from every screen and phone';
    hide.addEventListener('click', () => onHide(text, hide));
  }
  return h(
    'li',
    { class: 'text-answer', testid: 'text-answer', dataset: { count: String(count) } },
    h('span', { class: 'answer-text' }, text),
    count > 1 ? h('span', { class: 'answer-count', testid: 'answer-count' }, `×${count}`) : null,
    hide,
  );
}

function textResults(poll, onHide) {
  const list = h('ul', { class: 'text-answers', testid: 'text-answers' });
  const empty = h('p', { class: 'muted', testid: 'text-answers-empty' }, 'No answers yet.');
  const note = h('p', { class: 'muted small' });
  let shown = '';
  return {
    el: h('div', { class: 'text-results' }, empty, list, note),
    update(results) {
      // Grouped answers (same words, any case or spacing) when the server
      // sends them, most frequent first; else the raw answers, newest first.
      const groups = Array.isArray(results.textGroups)
        ? results.textGroups.map((g) => [g.text, g.count])
        : [...(results.textResponses ?? [])].reverse().map((a) => [a, 1]);
      empty.hidden = groups.length > 0;
      const key = JSON.stringify(groups);
      if (key !== shown) {
        shown = key;
        list.replaceChildren(...groups.map(([text, count]) => answerItem(text, count, onHide)));
      }
      const answered = groups.reduce((sum, [, count]) => sum + count, 0);
      const grouped = Array.isArray(results.textGroups);
      const unseen = results.currentVoteCount - answered;
      setText(
        note,
        unseen <= 0
          ? ''
          : grouped
            ? `${plural(unseen, 'answer')} not shown (hidden, or beyond the largest groups).`
            : `Showing the ${answered} newest answers.`,
      );
    },
  };
}

/**
 * A results panel for `poll`; call `update(poll)` whenever its results
 * change. `onHide(text, button)`, given on the presenter's view, puts a
 * Hide button on each open-text answer.
 */
export function resultsPanel(poll, { onHide } = {}) {
  const total = h('span', { testid: 'result-total' });
  const body =
    poll.pollType === 'multiple_choice'
      ? choiceResults(poll)
      : poll.pollType === 'rating_scale'
        ? ratingResults(poll)
        : textResults(poll, onHide);
  const totalLine = h('p', { class: 'result-total muted' }, total);
  const el = h('div', { class: 'results', testid: 'results', dataset: { pollId: poll.pollId } }, body.el, totalLine);
  const panel = {
    el,
    update(current) {
      const results = current.results;
      total.dataset.count = String(results.currentVoteCount);
      setText(total, plural(results.currentVoteCount, 'vote'));
      body.update(results);
    },
  };
  panel.update(poll);
  return panel;
}
