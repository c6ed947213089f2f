// The results of one poll as the projector shows them: bars for multiple
// choice, average and columns for a rating, a cloud of grouped answers for
// open text, or only the count while the server withholds the results.
// Each builder returns {el, update(results)}; update changes the DOM in
// place (so the bars slide) and returns true when the layout may have grown.

import { h, setText, formatAverage } from './dom.js';
import { updateBars } from './results.js';

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
      updateBars(rows, results);
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

export function resultsFor(poll) {
  if (!poll.visible) return withheldResults(poll);
  if (poll.pollType === 'multiple_choice') return choiceResults(poll);
  if (poll.pollType === 'rating_scale') return ratingResults(poll);
  return textResults();
}
