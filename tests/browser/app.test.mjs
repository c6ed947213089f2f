// End-to-end test of the web app served by pollcast at `/`: a presenter
// page and several participant pages in one Chromium (sessionStorage keeps
// each tab a distinct participant), every result read from the screen.
//
//   cargo build --release --bin pollcast   # from the repository root
//   cd tests/browser && node --test app.test.mjs
//
// Needs Postgres (POLLCAST_TEST_PG, default postgres://postgres@127.0.0.1:5432/postgres)
// and Chromium (CHROMIUM, default /usr/bin/chromium). The whole-meeting test
// writes screenshot-presenter.png (1366×768), screenshot-presenter-1920.png
// and screenshot-participant.png (390×844) to target/screenshots, or to
// docs/ with UPDATE_SCREENSHOTS=1 (`make screenshots`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { Pollcast, repoRoot } from './lib/server.mjs';

// Screenshots of a real session: under target/ on every run, and into
// docs/ (the README's pictures) with UPDATE_SCREENSHOTS=1, so that a test
// run leaves the tree as it found it.
const screenshots = process.env.UPDATE_SCREENSHOTS
  ? path.join(repoRoot, 'docs')
  : path.join(repoRoot, 'target', 'screenshots');
mkdirSync(screenshots, { recursive: true });
import { launchChromium, chromiumPath } from './lib/browser.mjs';
import { eventually, sleep } from './lib/wait.mjs';
import { chromium } from 'playwright-core';

/** How long anything may take to show up on screen (2 slow cores). */
const SHOW = 20_000;
const TEST_TIMEOUT = 240_000;

let browser;

before(async () => {
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
});

// ----------------------------------------------------------------- helpers --

async function seeText(locator, expected, timeout = SHOW) {
  await eventually(async () => {
    assert.ok(await locator.isVisible(), `${locator} is not visible`);
    const text = (await locator.textContent()).trim();
    if (expected instanceof RegExp) assert.match(text, expected);
    else assert.equal(text, expected);
  }, timeout);
}

/** A page that reports its script errors, so a broken app fails loudly. */
async function openPage(label) {
  const page = await browser.context.newPage();
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(`${label}: ${error.message}`));
  return page;
}

function assertNoScriptErrors(pages) {
  assert.deepEqual(pages.flatMap((p) => p.errors), []);
}

async function createSession(presenter, url, title) {
  await presenter.goto(`${url}/`);
  await presenter.getByTestId('session-title-input').fill(title);
  await presenter.getByTestId('create-session').click();
  await presenter.waitForURL(/\/present\?session=[0-9a-f-]{36}$/, { timeout: SHOW });
  await presenter.getByTestId('start-card').waitFor({ timeout: SHOW });
  await seeText(presenter.getByTestId('connection-status'), 'live');
  await seeText(presenter.getByTestId('session-title'), title);
  const code = (await presenter.getByTestId('join-code').textContent()).trim();
  const link = await presenter.getByTestId('join-link').getAttribute('href');
  assert.match(code, /^[a-hjkmnp-z2-9]{6}$/);
  assert.equal(link, `${url}/join?code=${code}`);
  return { code, link };
}

async function join(page, link, name) {
  await page.goto(link);
  await page.getByTestId('display-name-input').fill(name);
  await page.getByTestId('join-button').click();
  await seeText(page.getByTestId('me'), name);
  await seeText(page.getByTestId('connection-status'), 'live');
}

async function addPoll(presenter, { question, pollType, options, allowMultiple, minRating, maxRating, resultsVisibility }) {
  // The form folds away once there are polls; open it when it is folded.
  if (!(await presenter.getByTestId('add-poll-section').evaluate((details) => details.open))) {
    await presenter.getByTestId('add-poll-toggle').click();
  }
  await presenter.getByTestId('poll-type').selectOption(pollType);
  if (resultsVisibility) await presenter.getByTestId('poll-visibility').selectOption(resultsVisibility);
  await presenter.getByTestId('poll-question').fill(question);
  if (options) await presenter.getByTestId('poll-options').fill(options.join('\n'));
  if (allowMultiple) await presenter.getByTestId('poll-allow-multiple').check();
  if (minRating !== undefined) await presenter.getByTestId('poll-min-rating').fill(String(minRating));
  if (maxRating !== undefined) await presenter.getByTestId('poll-max-rating').fill(String(maxRating));
  await presenter.getByTestId('add-poll').click();
  await pollCard(presenter, question).waitFor({ timeout: SHOW });
}

/** The presenter's card of the poll asking `question`. */
function pollCard(presenter, question) {
  return presenter
    .getByTestId('poll')
    .filter({ has: presenter.getByTestId('poll-question-text').getByText(question, { exact: true }) });
}

/** What the bars of a results panel show: {option or rating value: count}. */
async function shownCounts(results) {
  return results.evaluate((root) => {
    const counts = {};
    for (const row of root.querySelectorAll('[data-testid="result-row"], [data-testid="rating-row"]')) {
      const key = row.dataset.option ?? row.dataset.value;
      counts[key] = Number(row.querySelector('[data-testid="result-count"]').textContent);
    }
    return counts;
  });
}

async function seeCounts(results, expected) {
  await eventually(async () => {
    assert.ok(await results.isVisible(), 'results are not visible');
    assert.deepEqual(await shownCounts(results), expected);
  });
}

async function seeAnswers(results, expected) {
  await eventually(async () => {
    const answers = await results.getByTestId('text-answer').locator('.answer-text').allTextContents();
    assert.deepEqual([...answers].sort(), [...expected].sort());
  });
}

/** A participant answers the open poll `question` from the screen. */
async function vote(page, question, choice) {
  const poll = page.getByTestId('active-poll');
  await seeText(poll.getByTestId('poll-question-text'), question);
  if (choice.option) await poll.getByTestId('vote-option').filter({ hasText: choice.option }).click();
  if (choice.rating !== undefined) await poll.locator(`[data-testid="rating-option"][data-value="${choice.rating}"]`).click();
  if (choice.text) await poll.getByTestId('text-input').fill(choice.text);
  await poll.getByTestId('submit-vote').click();
}

/** The participant token this tab keeps (sessionStorage), for direct API calls. */
async function participantToken(page) {
  return page.evaluate(() => {
    const key = Object.keys(sessionStorage).find((k) => k.startsWith('pollcast:participant:'));
    return JSON.parse(sessionStorage.getItem(key)).token;
  });
}

/** Every control of a participant's poll card is disabled, and nothing can be sent. */
async function seeLocked(poll) {
  await eventually(async () => {
    const { controls, disabled, sendable } = await poll.evaluate((card) => {
      const controls = [...card.querySelectorAll('input, textarea, select')];
      const send = card.querySelector('[data-testid="submit-vote"]');
      return {
        controls: controls.length,
        disabled: controls.filter((c) => c.matches(':disabled')).length,
        sendable: Boolean(send && !send.disabled && send.checkVisibility()),
      };
    });
    assert.equal(disabled, controls, `${controls - disabled} of ${controls} controls are live`);
    assert.equal(sendable, false, 'the send button is live');
  });
}

async function seeVoteMessage(page, kind, text) {
  const message = page.getByTestId('active-poll').getByTestId('vote-message');
  await seeText(message, text);
  assert.equal(await message.getAttribute('data-kind'), kind);
}

// ------------------------------------------------------ meeting helpers --

const LAPTOP = { width: 1366, height: 768 };
const PHONE = { width: 390, height: 844 };
const PROJECTOR = { width: 1920, height: 1080 };
/** What a participant must not receive while a poll's results are withheld. */
const RESULT_FIELDS = ['voteBreakdown', 'ratingDistribution', 'averageRating', 'textResponses', 'textGroups'];

/** A second Chromium, not the persistent one: each of its contexts is a browser with empty storage. */
async function launchOtherBrowser() {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** A page in `context` that reports its script errors (as openPage does). */
async function pageIn(context, label) {
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(`${label}: ${error.message}`));
  return page;
}

/**
 * Keeps every SSE frame `page` receives (whatever EventSource it opens,
 * across reloads) and every session snapshot it fetches in page.frames and
 * page.snapshots, as the page received them. Call before the first goto.
 */
async function recordStreams(page) {
  page.frames = [];
  page.snapshots = [];
  await page.exposeFunction('__pollcastFrame', (frame) => page.frames.push(frame));
  await page.addInitScript(() => {
    const Native = window.EventSource;
    window.EventSource = class RecordingEventSource extends Native {
      addEventListener(type, listener, options) {
        const record = (message) => {
          window.__pollcastFrame({ type, id: message.lastEventId, data: message.data });
          return listener.call(this, message);
        };
        return super.addEventListener(type, record, options);
      }
    };
  });
  page.on('response', async (response) => {
    if (/\/v1\/sessions\/[^/?]+$/.test(new URL(response.url()).pathname) && response.request().method() === 'GET') {
      page.snapshots.push(await response.json().catch(() => null));
    }
  });
  return page;
}

/** A phone (390×844) whose frames and snapshots are recorded (recordStreams). */
async function openPhone(label) {
  const page = await openPage(label);
  await page.setViewportSize(PHONE);
  return recordStreams(page);
}

/**
 * The projector: /screen at 1920×1080 in a context of its own (no presenter
 * key in its storage), its frames and snapshots recorded like a phone's.
 */
async function openProjector(context, url, sessionId) {
  const page = await recordStreams(await pageIn(context, 'screen'));
  await page.goto(`${url}/screen?session=${sessionId}`);
  return page;
}

/** {option: count} as the screen's bars show them. */
function screenChoices(screen) {
  return screen.getByTestId('choice-results').evaluate((list) => {
    const counts = {};
    for (const row of list.querySelectorAll('[data-testid="choice-row"]')) {
      counts[row.dataset.option] = Number(row.querySelector('[data-testid="choice-count"]').textContent);
    }
    return counts;
  });
}

/** Whether an <img> has loaded a picture (an SVG that failed has no natural width). */
async function seeImageLoaded(image) {
  await eventually(async () => {
    assert.ok(await image.isVisible(), `${image} is not visible`);
    assert.ok(await image.evaluate((img) => img.complete && img.naturalWidth > 0), `${image} has not loaded`);
  });
}

/** A CSV document as rows of fields (RFC 4180 quoting), header row first. */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i += 1;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i += 1;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  if (field || row.length) rows.push([...row, field]);
  return rows;
}

/** The JSON frames of `frames` about `pollId`: [{type, payload, topic}]. */
function framesAbout(frames, pollId) {
  return frames
    .map((frame) => ({ type: frame.type, ...JSON.parse(frame.data) }))
    .filter((event) => event.payload?.pollId === pollId);
}

/** The session stream read raw with `token`, beside the page: every frame, parsed by hand. */
function rawStream(url, sessionId, token) {
  const frames = [];
  const abort = new AbortController();
  const reading = (async () => {
    const query = new URLSearchParams({ access_token: token });
    const response = await fetch(`${url}/v1/sessions/${sessionId}/events?${query}`, {
      signal: abort.signal,
      headers: { accept: 'text/event-stream' },
    });
    const decoder = new TextDecoder();
    let buffer = '';
    for await (const chunk of response.body) {
      buffer += decoder.decode(chunk, { stream: true }).replace(/\r\n?/g, '\n');
      for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
        const block = buffer.slice(0, end).split('\n');
        buffer = buffer.slice(end + 2);
        const field = (name) => block.filter((l) => l.startsWith(`${name}:`)).map((l) => l.slice(name.length + 1).replace(/^ /, ''));
        const data = field('data').join('\n');
        if (data) frames.push({ type: field('event')[0] ?? 'message', id: field('id')[0], data });
      }
    }
  })().catch(() => {});
  return { frames, close: () => abort.abort() };
}

/** Asserts no frame and no snapshot of `phone` carried results of `pollId`; returns how many frames were checked. */
function assertNothingLeaked(label, frames, snapshots, pollId) {
  const events = framesAbout(frames, pollId);
  for (const event of events) {
    const leaked = RESULT_FIELDS.filter((field) => field in event.payload);
    assert.deepEqual(leaked, [], `${label} got ${leaked} in ${event.type} #${event.id}`);
  }
  for (const snapshot of snapshots) {
    const poll = snapshot?.polls?.find((p) => p.pollId === pollId);
    if (poll) assert.equal(poll.results, null, `${label}'s snapshot carried the results`);
  }
  return events;
}

/** The pixel widths of the result bars (their tracks) on a page. */
async function barWidths(results) {
  return results.evaluate((root) =>
    [...root.querySelectorAll('.bar-track')].map((track) => ({
      track: track.getBoundingClientRect().width,
      fill: track.firstElementChild.getBoundingClientRect().width,
    })),
  );
}

// ------------------------------------------------------------------ tests --

test('a presenter and four participants run a session with all three poll types', { timeout: TEST_TIMEOUT }, async () => {
  const server = await new Pollcast().start();
  const pages = [];
  try {
    const presenter = await openPage('presenter');
    pages.push(presenter);
    const { link } = await createSession(presenter, server.url, 'All hands: Q4');
    await seeText(presenter.getByTestId('session-status'), 'not started');

    const names = ['Ada', 'Grace', 'Linus', 'Barbara'];
    const people = [];
    for (const name of names) {
      const page = await openPage(name);
      pages.push(page);
      people.push(page);
    }
    await Promise.all(people.map((page, i) => join(page, link, names[i])));
    const [ada, grace, linus, barbara] = people;

    await seeText(presenter.getByTestId('participant-count'), '4');
    await seeText(grace.getByTestId('participant-count'), '4');
    await seeText(ada.getByTestId('waiting'), /not started yet/);

    await presenter.getByTestId('start-session').click();
    await seeText(presenter.getByTestId('session-status'), 'live session');
    await addPoll(presenter, { question: 'Where should the offsite be?', pollType: 'multiple_choice', options: ['Lisbon', 'Berlin', 'Kyoto'] });
    await addPoll(presenter, { question: 'How was the quarter?', pollType: 'rating_scale', minRating: 1, maxRating: 5 });
    await addPoll(presenter, { question: 'One word for next year?', pollType: 'open_text' });
    assert.equal(await presenter.getByTestId('poll').count(), 3);
    await seeText(ada.getByTestId('waiting'), /Waiting for the presenter/);

    // Multiple choice: everyone votes at once.
    const offsite = pollCard(presenter, 'Where should the offsite be?');
    await offsite.getByTestId('activate-poll').click();
    await seeText(offsite.getByTestId('poll-status'), 'open · voting');
    const choices = ['Lisbon', 'Lisbon', 'Kyoto', 'Berlin'];
    await Promise.all(people.map((page, i) => vote(page, 'Where should the offsite be?', { option: choices[i] })));
    await Promise.all(people.map((page) => seeVoteMessage(page, 'accepted', '✓ Your vote was counted.')));

    const expected = { Lisbon: 2, Berlin: 1, Kyoto: 1 };
    await seeCounts(offsite.getByTestId('results'), expected);
    await seeText(offsite.getByTestId('result-total'), '4 votes');
    assert.deepEqual(
      await offsite.getByTestId('result-percent').allTextContents(),
      ['50%', '25%', '25%'],
    );
    for (const page of people) await seeCounts(page.getByTestId('active-poll').getByTestId('results'), expected);

    // Once counted, the controls lock on the choice made; the server
    // refuses a second vote by the same participant all the same.
    const adaPoll = ada.getByTestId('active-poll');
    await seeLocked(adaPoll);
    assert.equal(await adaPoll.getByTestId('vote-option').filter({ hasText: 'Lisbon' }).locator('input').isChecked(), true);
    const adaToken = await participantToken(ada);
    const berlin = await adaPoll.getByTestId('vote-option').filter({ hasText: 'Berlin' }).getAttribute('data-option-id');
    const again = await server.request('POST', `/v1/polls/${await adaPoll.getAttribute('data-poll-id')}/votes`, {
      token: adaToken,
      body: { voteData: { selectedOptionIds: [berlin] } },
    });
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, 'duplicate_vote');
    await sleep(500);
    await seeCounts(offsite.getByTestId('results'), expected);

    // Rating: opening it closes the previous poll.
    const quarter = pollCard(presenter, 'How was the quarter?');
    await quarter.getByTestId('activate-poll').click();
    await seeText(offsite.getByTestId('poll-status'), 'closed');
    const ratings = [5, 4, 4, 3];
    await Promise.all(people.map((page, i) => vote(page, 'How was the quarter?', { rating: ratings[i] })));
    await Promise.all(people.map((page) => seeVoteMessage(page, 'accepted', '✓ Your vote was counted.')));
    await seeText(quarter.getByTestId('result-average'), '4.00');
    await seeCounts(quarter.getByTestId('results'), { 1: 0, 2: 0, 3: 1, 4: 2, 5: 1 });
    await seeText(quarter.getByTestId('result-total'), '4 votes');
    await seeText(linus.getByTestId('active-poll').getByTestId('result-average'), '4.00');

    // Open text: the answers appear on every screen, without who wrote them.
    const word = pollCard(presenter, 'One word for next year?');
    await word.getByTestId('activate-poll').click();
    const words = ['Focus', 'Ship it', 'Calm', 'Ownership'];
    await Promise.all(people.map((page, i) => vote(page, 'One word for next year?', { text: words[i] })));
    await Promise.all(people.map((page) => seeVoteMessage(page, 'accepted', '✓ Your vote was counted.')));
    await seeAnswers(word.getByTestId('results'), words);
    await seeText(word.getByTestId('result-total'), '4 votes');
    // Open text is private until the presenter reveals it: each phone shows
    // only its own answer.
    await seeText(word.getByTestId('results-hidden-badge'), 'hidden from audience');
    for (const [i, page] of people.entries()) {
      const poll = page.getByTestId('active-poll');
      await seeText(poll.getByTestId('my-answer'), `Your answer: ${words[i]}`);
      await seeText(poll.getByTestId('results-withheld'), 'Results will be shown later.');
      assert.equal(await poll.getByTestId('text-answer').count(), 0);
    }
    await word.getByTestId('reveal-results').click();
    await eventually(async () => assert.equal(await word.getByTestId('results-hidden-badge').isVisible(), false));
    await seeAnswers(barbara.getByTestId('active-poll').getByTestId('results'), words);
    for (const name of names) {
      assert.equal(await presenter.getByTestId('poll-list').getByText(name).count(), 0, `${name} is shown`);
    }
    // The presenter hides an answer: it leaves every phone and the presenter's list.
    const calm = word.getByTestId('text-answer').filter({ hasText: 'Calm' });
    await calm.getByTestId('hide-answer').click();
    const kept = words.filter((w) => w !== 'Calm');
    await seeAnswers(word.getByTestId('results'), kept);
    for (const page of people) {
      await seeAnswers(page.getByTestId('active-poll').getByTestId('results'), kept);
    }


    // Ending the session (the button asks for a second click) closes the open poll.
    await presenter.getByTestId('end-session').click();
    await presenter.getByTestId('end-session').click();
    await seeText(presenter.getByTestId('session-status'), 'ended');
    await seeText(word.getByTestId('poll-status'), 'closed');
    for (const page of people) {
      await page.getByTestId('session-ended').waitFor({ timeout: SHOW });
      await seeAnswers(page.getByTestId('last-poll').getByTestId('results'), kept);
    }
    assertNoScriptErrors(pages);
  } finally {
    await Promise.all(pages.map((page) => page.close()));
    await server.stop();
  }
});

test('every page rides out a server restart and catches up without a reload', { timeout: TEST_TIMEOUT }, async () => {
  const server = await new Pollcast().start();
  const pages = [];
  try {
    const presenter = await openPage('presenter');
    pages.push(presenter);
    const { link } = await createSession(presenter, server.url, 'Restart drill');
    const names = ['Ann', 'Bob', 'Cem'];
    const people = [];
    for (const name of names) {
      const page = await openPage(name);
      pages.push(page);
      people.push(page);
    }
    await Promise.all(people.map((page, i) => join(page, link, names[i])));
    await seeText(presenter.getByTestId('participant-count'), '3');
    await presenter.getByTestId('start-session').click();
    await seeText(presenter.getByTestId('session-status'), 'live session');

    await addPoll(presenter, { question: 'Coffee or tea?', pollType: 'multiple_choice', options: ['Coffee', 'Tea'] });
    const coffee = pollCard(presenter, 'Coffee or tea?');
    await coffee.getByTestId('activate-poll').click();
    await Promise.all(people.map((page) => vote(page, 'Coffee or tea?', { option: 'Coffee' })));
    await seeCounts(coffee.getByTestId('results'), { Coffee: 3, Tea: 0 });
    await addPoll(presenter, { question: 'Which snacks? (pick any)', pollType: 'multiple_choice', options: ['Fruit', 'Cookies', 'Nuts'], allowMultiple: true });

    // A marker in each page's window: a reload would wipe it.
    for (const page of pages) await page.evaluate(() => { window.__noReload = 'still here'; });

    // The restart (what server.restart() does, with a look at the screens in
    // between): SIGKILL, so no client is told anything, then the same port
    // and database. Every page shows it is reconnecting while the server is
    // down, then goes live again by itself.
    await server.kill();
    for (const page of pages) await seeText(page.getByTestId('connection-status'), 'reconnecting…');
    await sleep(2500); // long enough for the browser's own retries to fail
    for (const page of pages) await seeText(page.getByTestId('connection-status'), 'reconnecting…');
    await server.start();
    for (const page of pages) await seeText(page.getByTestId('connection-status'), 'live', 30_000);

    // Right after the restart: a poll opened and votes cast reach every page.
    const snacks = pollCard(presenter, 'Which snacks? (pick any)');
    await snacks.getByTestId('activate-poll').click();
    await seeText(coffee.getByTestId('poll-status'), 'closed');
    const picks = [['Fruit', 'Nuts'], ['Cookies'], ['Fruit']];
    await Promise.all(
      people.map(async (page, i) => {
        const poll = page.getByTestId('active-poll');
        await seeText(poll.getByTestId('poll-question-text'), 'Which snacks? (pick any)');
        for (const option of picks[i]) await poll.getByTestId('vote-option').filter({ hasText: option }).click();
        await poll.getByTestId('submit-vote').click();
        await seeVoteMessage(page, 'accepted', '✓ Your vote was counted.');
      }),
    );
    const expected = { Fruit: 2, Cookies: 1, Nuts: 1 };
    await seeCounts(snacks.getByTestId('results'), expected);
    await seeText(snacks.getByTestId('result-total'), '3 votes');
    for (const page of people) await seeCounts(page.getByTestId('active-poll').getByTestId('results'), expected);
    // What happened before the restart is still on screen (closed polls fold).
    await coffee.getByTestId('toggle-results').click();
    await seeCounts(coffee.getByTestId('results'), { Coffee: 3, Tea: 0 });
    await seeText(presenter.getByTestId('participant-count'), '3', 30_000);

    for (const page of pages) {
      assert.equal(await page.evaluate(() => window.__noReload), 'still here', 'the page reloaded');
    }
    assertNoScriptErrors(pages);
  } finally {
    await Promise.all(pages.map((page) => page.close()));
    await server.stop();
  }
});

test('a refused stream is reopened after a backoff, and connection:reset resyncs from a snapshot', { timeout: TEST_TIMEOUT }, async () => {
  const server = await new Pollcast().start();
  const pages = [];
  const sessionStream = /\/v1\/sessions\/[0-9a-f-]{36}\/events\?/;
  try {
    const presenter = await openPage('presenter');
    const dee = await openPage('Dee');
    pages.push(presenter, dee);
    const { link } = await createSession(presenter, server.url, 'Rough network');
    await join(dee, link, 'Dee');
    await presenter.getByTestId('start-session').click();
    await addPoll(presenter, { question: 'Tabs or spaces?', pollType: 'multiple_choice', options: ['Tabs', 'Spaces'] });
    await addPoll(presenter, { question: 'Rate the coffee', pollType: 'rating_scale', minRating: 1, maxRating: 20 });
    await dee.evaluate(() => { window.__noReload = 'still here'; });

    // Every stream request of Dee's page is answered 503, as a proxy would
    // while its backend is away: EventSource ends CLOSED and does not retry
    // by itself; the page must open a new one.
    await dee.route(sessionStream, (route) =>
      route.fulfill({ status: 503, contentType: 'application/json', body: '{"error":{"code":"unavailable","message":"upstream is away","traceId":"00000000000000000000000000000001"}}' }),
    );
    await server.kill();
    await seeText(dee.getByTestId('connection-status'), 'reconnecting…');
    await server.start();
    await seeText(presenter.getByTestId('connection-status'), 'live', 30_000);
    await pollCard(presenter, 'Tabs or spaces?').getByTestId('activate-poll').click();
    await sleep(3000);
    await seeText(dee.getByTestId('connection-status'), 'reconnecting…');
    assert.equal(await dee.getByTestId('active-poll').count(), 0);

    await dee.unroute(sessionStream);
    await seeText(dee.getByTestId('connection-status'), 'live', 30_000);
    await vote(dee, 'Tabs or spaces?', { option: 'Spaces' });
    await seeVoteMessage(dee, 'accepted', '✓ Your vote was counted.');
    await seeCounts(pollCard(presenter, 'Tabs or spaces?').getByTestId('results'), { Tabs: 0, Spaces: 1 });

    // The next stream answers connection:reset, as for a Last-Event-ID past
    // retention: the page takes a new snapshot and streams from its id.
    let snapshots = 0;
    dee.on('request', (request) => {
      if (/\/v1\/sessions\/[0-9a-f-]{36}$/.test(request.url())) snapshots += 1;
    });
    const reset = {
      type: 'connection:reset',
      timestamp: new Date().toISOString(),
      payload: { reason: 'expired', lastEventId: '1', snapshotUrl: '/v1/sessions/x' },
    };
    await dee.route(sessionStream, (route) =>
      route.fulfill({
        status: 200,
        headers: { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' },
        body: `retry: 2000\nevent: connection:reset\ndata: ${JSON.stringify(reset)}\n\n`,
      }), { times: 1 });
    await server.kill();
    await seeText(dee.getByTestId('connection-status'), 'reconnecting…');
    await server.start();
    await seeText(presenter.getByTestId('connection-status'), 'live', 30_000);
    await pollCard(presenter, 'Rate the coffee').getByTestId('activate-poll').click();
    await eventually(() => assert.ok(snapshots >= 1, 'no new snapshot was fetched'), 30_000);
    await seeText(dee.getByTestId('connection-status'), 'live', 30_000);
    // A 1–20 scale is typed rather than picked.
    const poll = dee.getByTestId('active-poll');
    await seeText(poll.getByTestId('poll-question-text'), 'Rate the coffee');
    await poll.getByTestId('rating-input').fill('7');
    await poll.getByTestId('submit-vote').click();
    await seeVoteMessage(dee, 'accepted', '✓ Your vote was counted.');
    await seeText(pollCard(presenter, 'Rate the coffee').getByTestId('result-average'), '7.00');

    assert.equal(await dee.evaluate(() => window.__noReload), 'still here', 'the page reloaded');
    assertNoScriptErrors(pages);
  } finally {
    await Promise.all(pages.map((page) => page.close()));
    await server.stop();
  }
});

test('a whole meeting: presenter link in a new browser, the projector\'s screen, results hidden then revealed, a reload mid-poll, a timed poll', { timeout: TEST_TIMEOUT }, async () => {
  const server = await new Pollcast().start();
  const other = await launchOtherBrowser();
  const pages = [];
  const raw = [];
  try {
    // The presenter's laptop: a browser of its own.
    const laptop = await other.newContext({ viewport: LAPTOP, reducedMotion: 'reduce' });
    const presenter = await pageIn(laptop, 'presenter');
    pages.push(presenter);
    const { code, link } = await createSession(presenter, server.url, 'Company all-hands');
    const sessionId = new URL(presenter.url()).searchParams.get('session');
    const presenterLink = await presenter.getByTestId('presenter-link').inputValue();
    assert.equal(presenterLink.split('#')[0], `${server.url}/present?session=${sessionId}`);
    assert.match(presenterLink, /#key=[\w.-]{20,}$/);
    assert.equal(await presenter.getByTestId('storage-banner').isVisible(), false, 'banner on the Postgres store');
    assert.equal(await presenter.getByTestId('open-screen').getAttribute('href'), `/screen?session=${sessionId}`);
    await seeImageLoaded(presenter.getByTestId('join-qr'));

    // The projector: the screen view in a browser context of its own, so
    // without the presenter key, watching as the audience does.
    const projector = await other.newContext({ viewport: PROJECTOR, reducedMotion: 'reduce' });
    const screen = await openProjector(projector, server.url, sessionId);
    pages.push(screen);
    await seeText(screen.getByTestId('join-code'), code);
    await seeImageLoaded(screen.getByTestId('join-qr'));
    await seeText(screen.getByTestId('key-hint'), 'F: full screen'); // no keys to move polls without the key
    await screen.getByTestId('welcome').waitFor({ timeout: SHOW });

    // Three phones.
    const names = ['Priya', 'Tomás', 'Mei'];
    const phones = [];
    for (const name of names) {
      const phone = await openPhone(name);
      pages.push(phone);
      phones.push(phone);
    }
    await Promise.all(phones.map((phone, i) => join(phone, link, names[i])));
    const [priya, tomas, mei] = phones;
    // Beside Priya's page, her stream read raw with her own token.
    raw.push(rawStream(server.url, sessionId, await participantToken(priya)));
    await seeText(presenter.getByTestId('participant-count'), '3');
    await seeText(screen.getByTestId('participant-count'), '3');
    await presenter.getByTestId('start-session').click();
    await seeText(presenter.getByTestId('session-status'), 'live session');

    // A poll whose results wait for the presenter.
    const question = 'Which day for the launch?';
    await addPoll(presenter, { question, pollType: 'multiple_choice', options: ['Tuesday', 'Thursday'], resultsVisibility: 'manual' });
    const launch = pollCard(presenter, question);
    const pollId = await launch.getAttribute('data-poll-id');
    await launch.getByTestId('activate-poll').click();
    await seeText(launch.getByTestId('poll-status'), 'open · voting');
    await seeText(launch.getByTestId('results-hidden-badge'), 'hidden from audience');
    // The open poll is the first thing on the page.
    assert.equal(await presenter.getByTestId('live-polls').getByTestId('poll').count(), 1);
    // The screen follows the presenter to it: the question, the options, no results.
    await seeText(screen.getByTestId('screen-question'), question);
    await seeText(screen.getByTestId('poll-status'), 'Vote now');
    await screen.getByTestId('results-hidden').waitFor({ timeout: SHOW });
    const picks = ['Tuesday', 'Tuesday', 'Thursday'];
    await Promise.all(phones.map((phone, i) => vote(phone, question, { option: picks[i] })));
    await Promise.all(phones.map((phone) => seeVoteMessage(phone, 'accepted', '✓ Your vote was counted.')));
    await seeCounts(launch.getByTestId('results'), { Tuesday: 2, Thursday: 1 });
    for (const phone of phones) {
      const poll = phone.getByTestId('active-poll');
      await seeLocked(poll);
      await seeText(poll.getByTestId('results-withheld'), 'Results will be shown later.');
      await seeText(poll.getByTestId('vote-count'), '3 votes so far.');
      assert.equal(await poll.locator('[data-testid="result-row"]:visible').count(), 0);
    }
    // The screen counts the votes and shows nothing else.
    await seeText(screen.getByTestId('withheld-count'), '3');
    await seeText(screen.getByTestId('vote-count'), '3 votes');
    assert.deepEqual(await screen.getByTestId('option-label').allTextContents(), ['Tuesday', 'Thursday']);
    assert.equal(await screen.getByTestId('choice-results').count(), 0);
    assert.equal(await screen.getByTestId('choice-count').count(), 0);

    // Mei reloads mid-poll, with this tab's own memory of her vote wiped:
    // what comes back comes from the server (the snapshot's myVote).
    await mei.evaluate(() => {
      for (const key of Object.keys(sessionStorage)) if (key.startsWith('pollcast:voted:')) sessionStorage.removeItem(key);
    });
    await mei.reload();
    await seeVoteMessage(mei, 'accepted', '✓ Your vote was counted.');
    await seeLocked(mei.getByTestId('active-poll'));
    const meiChoice = mei.getByTestId('active-poll').getByTestId('vote-option').filter({ hasText: 'Thursday' }).locator('input');
    assert.equal(await meiChoice.isChecked(), true);
    assert.equal(await mei.getByTestId('active-poll').locator('[data-testid="result-row"]:visible').count(), 0);

    // The presenter's tab closes; the presenter link opens full control in
    // a new browser context (empty storage), and leaves the address bar.
    await laptop.close();
    const laptop2 = await other.newContext({ viewport: LAPTOP, reducedMotion: 'reduce' });
    const presenter2 = await pageIn(laptop2, 'presenter, reopened');
    pages.push(presenter2);
    await presenter2.goto(presenterLink);
    await seeText(presenter2.getByTestId('connection-status'), 'live');
    assert.equal(new URL(presenter2.url()).hash, '', 'the key stays in the address bar');
    const stored = await presenter2.evaluate((id) => JSON.parse(localStorage.getItem(`pollcast:presenter:${id}`)), sessionId);
    assert.equal(stored.token, new URL(presenterLink).hash.replace('#key=', ''));
    const launch2 = pollCard(presenter2, question);
    await seeCounts(launch2.getByTestId('results'), { Tuesday: 2, Thursday: 1 });

    // A browser without the key is asked for the link, not turned away.
    const stranger = await other.newContext({ viewport: LAPTOP });
    const locked = await pageIn(stranger, 'presenter without key');
    await locked.goto(`${server.url}/present?session=${sessionId}`);
    await seeText(locked.getByTestId('key-needed-title'), 'This browser has no presenter key for this session');
    await locked.getByTestId('key-input').fill(presenterLink);
    await locked.getByTestId('key-submit').click();
    await seeText(locked.getByTestId('connection-status'), 'live');
    await pollCard(locked, question).getByTestId('close-poll').waitFor({ timeout: SHOW });
    assertNoScriptErrors([locked]);
    await stranger.close();

    // Before the reveal: not one frame any phone received, nor any snapshot
    // it fetched, nor Priya's raw stream carried the results of that poll.
    for (const [i, phone] of phones.entries()) {
      const events = assertNothingLeaked(names[i], phone.frames, phone.snapshots, pollId);
      assert.ok(events.some((e) => e.type === 'vote:accepted' && e.payload.resultsWithheld === true), `${names[i]} saw no vote frames`);
    }
    const screenEvents = assertNothingLeaked('screen', screen.frames, screen.snapshots, pollId);
    assert.ok(screenEvents.filter((e) => e.type === 'vote:accepted' && e.payload.resultsWithheld === true).length >= 3, 'the screen saw no vote frames');
    assert.ok(screen.snapshots.length >= 1, 'the screen fetched no snapshot');
    const rawEvents = assertNothingLeaked('raw stream', raw[0].frames, [], pollId);
    assert.ok(rawEvents.filter((e) => e.type === 'vote:accepted').length >= 3, 'the raw stream saw the votes');

    // The reveal reaches every phone, and the bars use the phone's width.
    await launch2.getByTestId('reveal-results').click();
    await eventually(async () => assert.equal(await launch2.getByTestId('results-hidden-badge').isVisible(), false));
    for (const phone of phones) {
      const results = phone.getByTestId('active-poll').getByTestId('results');
      await seeCounts(results, { Tuesday: 2, Thursday: 1 });
      const widths = await barWidths(results);
      for (const { track, fill } of widths) assert.ok(track >= 300, `a ${track}px bar on a 390px phone`);
      assert.ok(Math.abs(widths[0].fill / widths[0].track - 2 / 3) < 0.02, 'Tuesday’s bar is not two thirds');
    }
    assert.ok(framesAbout(priya.frames, pollId).some((e) => e.type === 'poll:results_revealed'));
    // The screen shows the results now, in place of the count.
    await eventually(async () => assert.deepEqual(await screenChoices(screen), { Tuesday: 2, Thursday: 1 }));
    assert.equal(await screen.getByTestId('results-hidden').count(), 0);
    assert.ok(framesAbout(screen.frames, pollId).some((e) => e.type === 'poll:results_revealed'));
    await tomas.screenshot({ path: path.join(screenshots, 'screenshot-participant.png') });

    // A timed poll closes by itself; phones count down, then lock.
    const timed = 'How clear was the plan?';
    await addPoll(presenter2, { question: timed, pollType: 'rating_scale', minRating: 1, maxRating: 5 });
    const clear = pollCard(presenter2, timed);
    const timedId = await clear.getAttribute('data-poll-id');
    await clear.getByTestId('poll-timer').selectOption('10');
    await clear.getByTestId('activate-poll').click();
    await seeText(clear.getByTestId('countdown'), /^0:(0\d|10) left$/);
    // The screen switches to it and counts down too.
    await seeText(screen.getByTestId('screen-question'), timed);
    await seeText(screen.getByTestId('countdown'), /^0:(0\d|10)$/);
    await seeText(launch2.getByTestId('poll-status'), 'closed');
    for (const phone of phones) await seeText(phone.getByTestId('active-poll').getByTestId('countdown'), /^0:(0\d|10) left$/);
    await vote(priya, timed, { rating: 4 });
    await vote(tomas, timed, { rating: 5 });
    await seeText(clear.getByTestId('result-average'), '4.50');
    await presenter2.evaluate(() => window.scrollTo(0, 0));
    await presenter2.screenshot({ path: path.join(screenshots, 'screenshot-presenter.png') });
    await presenter2.setViewportSize(PROJECTOR);
    await presenter2.screenshot({ path: path.join(screenshots, 'screenshot-presenter-1920.png') });
    await presenter2.setViewportSize(LAPTOP);
    // Nobody presses Close: the server's timer does.
    await seeText(clear.getByTestId('poll-status'), 'closed', 30_000);
    for (const phone of phones) {
      const last = phone.getByTestId('last-poll');
      await seeText(last.getByTestId('poll-question-text'), timed);
      await seeText(last.getByTestId('voting-closed'), 'Voting closed');
      assert.equal(await phone.getByTestId('active-poll').count(), 0);
      await seeText(last.getByTestId('result-average'), '4.50');
    }
    const closed = framesAbout(priya.frames, timedId).find((e) => e.type === 'poll:closed');
    assert.equal(closed?.payload.reason, 'timer');
    // The screen: no countdown any more, the final results.
    await seeText(screen.getByTestId('poll-status'), 'Time is up · final results');
    await seeText(screen.getByTestId('rating-average'), '4.50');
    assert.equal(await screen.getByTestId('countdown').isVisible(), false);

    // The results as a CSV file, downloaded with the presenter's button:
    // a row per option (or rating value) of each poll, with its count.
    const [download] = await Promise.all([presenter2.waitForEvent('download'), presenter2.getByTestId('export-csv').click()]);
    assert.match(download.suggestedFilename(), /\.csv$/);
    const [header, ...rows] = parseCsv(Buffer.concat(await (await download.createReadStream()).toArray()).toString());
    const col = Object.fromEntries(header.map((name, i) => [name, i]));
    for (const name of ['question', 'answer', 'count', 'votes']) assert.ok(name in col, `no ${name} column in ${header}`);
    const counted = (q) => Object.fromEntries(rows.filter((r) => r[col.question] === q).map((r) => [r[col.answer], Number(r[col.count])]));
    assert.deepEqual(counted(question), { Tuesday: 2, Thursday: 1 });
    assert.deepEqual(counted(timed), { 1: 0, 2: 0, 3: 0, 4: 1, 5: 1 });
    assert.ok(rows.filter((r) => r[col.question] === question).every((r) => r[col.votes] === '3'));

    // A co-presenter gets a link of their own.
    await presenter2.getByTestId('invite-presenter').click();
    const coLink = presenter2.getByTestId('co-presenter-link');
    await eventually(async () => assert.match(await coLink.inputValue(), /\/present\?session=.*#key=/));
    assert.notEqual(await coLink.inputValue(), presenterLink);
    await seeImageLoaded(presenter2.getByTestId('join-qr'));

    assertNoScriptErrors(pages);
  } finally {
    for (const stream of raw) stream.close();
    await Promise.all(pages.map((page) => page.close().catch(() => {})));
    await other.close();
    await server.stop();
  }
});

test('after_vote: a phone that voted keeps its bars current from the results endpoint, at most every 2 s', { timeout: TEST_TIMEOUT }, async () => {
  const server = await new Pollcast().start();
  const pages = [];
  try {
    const rest = async (method, pathname, options) => {
      const res = await server.request(method, pathname, options);
      assert.ok(res.status < 300, `${method} ${pathname}: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body;
    };
    const created = await rest('POST', '/v1/sessions', { body: { title: 'Lunch vote' } });
    const token = created.presenterToken;
    await rest('POST', `/v1/sessions/${created.sessionId}/start`, { token });
    const question = 'Pizza or sushi?';
    const poll = await rest('POST', `/v1/sessions/${created.sessionId}/polls`, {
      token,
      body: { question, pollType: 'multiple_choice', options: ['Pizza', 'Sushi'], resultsVisibility: 'after_vote' },
    });
    await rest('POST', `/v1/polls/${poll.pollId}/activate`, { token });
    const [pizza, sushi] = poll.options.map((o) => o.optionId);

    const phone = await openPhone('Ines');
    pages.push(phone);
    const fetches = [];
    phone.on('request', (request) => {
      if (new URL(request.url()).pathname === `/v1/polls/${poll.pollId}/results`) fetches.push(Date.now());
    });
    await join(phone, `${server.url}/join?code=${created.slug}`, 'Ines');
    const results = phone.getByTestId('active-poll').getByTestId('results');
    // Before voting: no results on this phone, none asked for.
    await seeText(phone.getByTestId('active-poll').getByTestId('poll-question-text'), question);
    assert.equal(await phone.getByTestId('active-poll').locator('[data-testid="result-row"]:visible').count(), 0);
    await vote(phone, question, { option: 'Pizza' });
    await seeCounts(results, { Pizza: 1, Sushi: 0 });

    // Six more votes, one every half second, as others vote: the frames
    // (coalesced by the server) carry only the count; the bars follow anyway.
    const started = Date.now();
    const others = [];
    for (let i = 0; i < 6; i += 1) {
      others.push((await rest('POST', `/v1/sessions/${created.slug}/participants`, { body: { displayName: `p${i}` } })).participantToken);
    }
    for (const [i, other] of others.entries()) {
      await rest('POST', `/v1/polls/${poll.pollId}/votes`, { token: other, body: { voteData: { selectedOptionIds: [i % 3 ? sushi : pizza] } } });
      await sleep(500);
    }
    await seeCounts(results, { Pizza: 3, Sushi: 4 });
    const frames = framesAbout(phone.frames, poll.pollId).filter((e) => e.type === 'vote:accepted' && e.payload.resultsWithheld);
    assert.ok(frames.length >= 3, `${frames.length} withheld frames`);
    // Throttled: requests at least ~2 s apart, fewer than the frames.
    assert.ok(fetches.length >= 1 && fetches.length <= Math.ceil((Date.now() - started) / 2000) + 1, `${fetches.length} requests`);
    assert.ok(fetches.length < frames.length, `${fetches.length} requests for ${frames.length} frames`);
    for (let i = 1; i < fetches.length; i += 1) assert.ok(fetches[i] - fetches[i - 1] >= 1900, `requests ${fetches[i] - fetches[i - 1]} ms apart`);
    assertNoScriptErrors(pages);
  } finally {
    await Promise.all(pages.map((page) => page.close()));
    await server.stop();
  }
});

test('on the memory store the presenter is warned, and a lost session says why', { timeout: TEST_TIMEOUT }, async () => {
  const server = await new Pollcast({ store: 'memory' }).start();
  const pages = [];
  try {
    const presenter = await openPage('presenter');
    pages.push(presenter);
    await createSession(presenter, server.url, 'Scratch session');
    await seeText(
      presenter.getByTestId('storage-banner'),
      /^This server keeps nothing on disk — a\s+restart loses every session\. Run with --database-url for a real meeting\.$/,
    );
    // A restart of the memory store loses the session; the page says so in
    // the server's words.
    const sessionId = new URL(presenter.url()).searchParams.get('session');
    await server.restart();
    const gone = await server.request('GET', `/v1/sessions/${sessionId}`);
    assert.equal(gone.status, 404);
    const page = presenter;
    await page.reload();
    await seeText(page.getByTestId('problem-title'), 'Session not found');
    await seeText(page.getByTestId('problem-text'), gone.body.error.message);
    assertNoScriptErrors(pages);
  } finally {
    await Promise.all(pages.map((page) => page.close()));
    await server.stop();
  }
});
