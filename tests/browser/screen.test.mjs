// End-to-end test of the projector's view, /screen?session=<id>: a session
// driven through REST (presenter and participants), the screen in Chromium
// at 1920×1080, every assertion read from the screen itself.
//
//   cd tests/browser && POLLCAST_BIN=/path/to/pollcast node --test screen.test.mjs
//
// Needs Postgres (POLLCAST_TEST_PG, default postgres://postgres@127.0.0.1:5432/postgres)
// and Chromium (CHROMIUM, default /usr/bin/chromium). Writes
// screenshot-screen.png (1920×1080) and screenshot-screen-phone.png (390×844)
// to target/screenshots, or to docs/ with UPDATE_SCREENSHOTS=1 (`make screenshots`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { Pollcast, repoRoot } from './lib/server.mjs';
import { launchChromium } from './lib/browser.mjs';
import { eventually, sleep } from './lib/wait.mjs';

const screenshots = process.env.UPDATE_SCREENSHOTS
  ? path.join(repoRoot, 'docs')
  : path.join(repoRoot, 'target', 'screenshots');
mkdirSync(screenshots, { recursive: true });

/** How long anything may take to show up on screen (2 slow cores). */
const SHOW = 20_000;
const TEST_TIMEOUT = 240_000;
const PROJECTOR = { width: 1920, height: 1080 };
const PHONE = { width: 390, height: 844 };

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

/** REST calls that must succeed: returns the body. */
async function ok(server, method, pathname, options) {
  const res = await server.request(method, pathname, options);
  assert.ok(res.status >= 200 && res.status < 300, `${method} ${pathname}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/** A started session with the given polls (created in order, none open). */
async function sessionWithPolls(server, title, polls) {
  const created = await ok(server, 'POST', '/v1/sessions', { body: { title } });
  const token = created.presenterToken;
  await ok(server, 'POST', `/v1/sessions/${created.sessionId}/start`, { token });
  const made = [];
  for (const poll of polls) {
    made.push(await ok(server, 'POST', `/v1/sessions/${created.sessionId}/polls`, { token, body: poll }));
  }
  return { id: created.sessionId, code: created.slug, token, polls: made };
}

async function joinAll(server, code, names) {
  const tokens = [];
  for (const displayName of names) {
    const joined = await ok(server, 'POST', `/v1/sessions/${code}/participants`, { body: { displayName } });
    tokens.push(joined.participantToken);
  }
  return tokens;
}

const vote = (server, pollId, token, voteData) =>
  ok(server, 'POST', `/v1/polls/${pollId}/votes`, { token, body: { voteData } });

const optionId = (poll, text) => poll.options.find((o) => o.optionText === text).optionId;

async function openScreen(server, sessionId, viewport = PROJECTOR) {
  const page = await browser.context.newPage();
  page.errors = [];
  page.on('pageerror', (error) => page.errors.push(error.message));
  await page.setViewportSize(viewport);
  await page.goto(`${server.url}/screen?session=${sessionId}`);
  return page;
}

/** {option text: count} as the screen's bars show them. */
function shownChoices(page) {
  return page.getByTestId('choice-results').evaluate((list) => {
    const counts = {};
    for (const row of list.querySelectorAll('[data-testid="choice-row"]')) {
      counts[row.querySelector('[data-testid="choice-label"]').textContent] = Number(
        row.querySelector('[data-testid="choice-count"]').textContent,
      );
    }
    return counts;
  });
}

/** {option text: bar width / track width}, as laid out on screen. */
function barShares(page) {
  return page.getByTestId('choice-results').evaluate((list) => {
    const shares = {};
    for (const row of list.querySelectorAll('[data-testid="choice-row"]')) {
      const bar = row.querySelector('[data-testid="choice-bar"]');
      const fill = bar.getBoundingClientRect();
      const track = bar.parentElement.getBoundingClientRect();
      shares[row.querySelector('[data-testid="choice-label"]').textContent] = fill.width / track.width;
    }
    return shares;
  });
}

async function seeChoices(page, expected, timeout = SHOW) {
  await eventually(async () => assert.deepEqual(await shownChoices(page), expected), timeout);
}

/** The bars' lengths match the counts shown (share of voters, ±2 %). */
async function seeBarsMatchCounts(page) {
  await eventually(async () => {
    const counts = await shownChoices(page);
    const voters = Number(await page.getByTestId('vote-count').getAttribute('data-count'));
    const shares = await barShares(page);
    for (const [option, count] of Object.entries(counts)) {
      const expected = voters ? count / voters : 0;
      assert.ok(Math.abs(shares[option] - expected) < 0.02, `${option}: bar ${shares[option]}, count ${count}/${voters}`);
    }
  });
}

const fontSize = (locator) => locator.evaluate((el) => Number.parseFloat(getComputedStyle(el).fontSize));

/** Nothing scrolls: the page fits its window. */
async function assertNoScrolling(page) {
  const size = await page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    scrollHeight: document.documentElement.scrollHeight,
    width: innerWidth,
    height: innerHeight,
    stageOverflow: (() => {
      const stage = document.getElementById('stage');
      return stage.scrollHeight - stage.clientHeight;
    })(),
  }));
  assert.ok(size.scrollWidth <= size.width, `page is ${size.scrollWidth} px wide in ${size.width}`);
  assert.ok(size.scrollHeight <= size.height, `page is ${size.scrollHeight} px tall in ${size.height}`);
  assert.ok(size.stageOverflow <= 1, `the poll overflows its area by ${size.stageOverflow} px`);
}

/** The join link as the screen must show it (without the scheme). */
async function expectedJoinLink(server, session) {
  const snapshot = await ok(server, 'GET', `/v1/sessions/${session.id}`);
  return (snapshot.joinUrl || `${server.url}/join?code=${session.code}`).replace(/^https?:\/\//, '');
}

async function seeJoinPanel(page, server, session) {
  await seeText(page.getByTestId('join-code'), session.code);
  await seeText(page.getByTestId('join-url'), await expectedJoinLink(server, session));
  await eventually(async () => {
    assert.ok(await page.getByTestId('join-qr').isVisible(), 'the QR code is not visible');
    const width = await page.getByTestId('join-qr').evaluate((img) => img.naturalWidth);
    assert.ok(width > 0, 'the QR image did not load');
  });
  assert.equal(await page.getByTestId('qr-box').getAttribute('data-state'), 'loaded');
}

const activePollId = async (server, session) => (await ok(server, 'GET', `/v1/sessions/${session.id}`)).activePollId;

// ------------------------------------------------------------------ tests --

test('the screen follows a session at 1920×1080: join panel, large poll, live bars, keys', { timeout: TEST_TIMEOUT }, async () => {
  const server = await new Pollcast().start();
  const pages = [];
  try {
    const session = await sessionWithPolls(server, 'All hands: Q4', [
      { question: 'Where should the offsite be?', pollType: 'multiple_choice', options: ['Lisbon', 'Berlin', 'Kyoto'] },
      { question: 'How was the quarter?', pollType: 'rating_scale', minRating: 1, maxRating: 5 },
      { question: 'One word for next year?', pollType: 'open_text' },
    ]);
    const [offsite, quarter, word] = session.polls;
    const screen = await openScreen(server, session.id);
    pages.push(screen);

    // Before the first poll: where to join, and a waiting line.
    await seeText(screen.getByTestId('welcome-wait'), 'Waiting for the first question…');
    await seeJoinPanel(screen, server, session);
    await seeText(screen.getByTestId('participant-count'), '0');
    assert.equal(await screen.getByTestId('connection-status').getAttribute('data-state'), 'live');

    // The presenter opens a poll: the screen switches to it, large.
    await ok(server, 'POST', `/v1/polls/${offsite.pollId}/activate`, { token: session.token });
    await seeText(screen.getByTestId('screen-question'), 'Where should the offsite be?');
    await seeText(screen.getByTestId('poll-status'), 'Vote now');
    await seeText(screen.getByTestId('poll-position'), 'Poll 1 of 3');
    assert.ok((await fontSize(screen.getByTestId('screen-question'))) >= 48, 'question under 48 px');
    for (const label of await screen.getByTestId('choice-label').all()) {
      assert.ok((await fontSize(label)) >= 32, `label "${await label.textContent()}" under 32 px`);
    }
    await seeChoices(screen, { Lisbon: 0, Berlin: 0, Kyoto: 0 });
    await seeText(screen.getByTestId('vote-count'), '0 votes');
    await assertNoScrolling(screen);

    // Participants join and vote: the count and the bars follow.
    const voters = await joinAll(server, session.code, ['Ada', 'Grace', 'Linus']);
    await seeText(screen.getByTestId('participant-count'), '3');
    await vote(server, offsite.pollId, voters[0], { selectedOptionIds: [optionId(offsite, 'Lisbon')] });
    await seeChoices(screen, { Lisbon: 1, Berlin: 0, Kyoto: 0 });
    await seeText(screen.getByTestId('vote-count'), '1 vote');
    await seeBarsMatchCounts(screen);
    await vote(server, offsite.pollId, voters[1], { selectedOptionIds: [optionId(offsite, 'Lisbon')] });
    await vote(server, offsite.pollId, voters[2], { selectedOptionIds: [optionId(offsite, 'Kyoto')] });
    await seeChoices(screen, { Lisbon: 2, Berlin: 0, Kyoto: 1 });
    await seeText(screen.getByTestId('vote-count'), '3 votes');
    await seeBarsMatchCounts(screen);
    // Bars slide to their new length (the test browser asks for reduced
    // motion, which turns that off; a projector's browser does not).
    await screen.emulateMedia({ reducedMotion: 'no-preference' });
    const transition = await screen.getByTestId('choice-bar').first().evaluate((bar) => getComputedStyle(bar).transitionProperty);
    assert.match(transition, /\bwidth\b/);
    await screen.emulateMedia({ reducedMotion: 'reduce' });
    const leading = screen.locator('[data-testid="choice-row"].leading [data-testid="choice-label"]');
    assert.deepEqual(await leading.allTextContents(), ['Lisbon']);
    await seeJoinPanel(screen, server, session);
    await screen.getByTestId('key-hint').evaluate((el) => el.classList.add('faded'));
    await screen.screenshot({ path: path.join(screenshots, 'screenshot-screen.png') });

    // The same screen on a phone: still no scrolling, the code readable.
    const phone = await openScreen(server, session.id, PHONE);
    pages.push(phone);
    await seeChoices(phone, { Lisbon: 2, Berlin: 0, Kyoto: 1 });
    await seeText(phone.getByTestId('join-code'), session.code);
    await assertNoScrolling(phone);
    await phone.screenshot({ path: path.join(screenshots, 'screenshot-screen-phone.png') });
    await phone.close();
    pages.pop();

    // Without the presenter token the arrow keys do nothing.
    await screen.keyboard.press('ArrowRight');
    await sleep(1000);
    assert.equal(await activePollId(server, session), offsite.pollId);
    await seeText(screen.getByTestId('screen-question'), 'Where should the offsite be?');

    // With it (as the presenter page keeps it), → opens the next poll.
    await screen.evaluate(
      ([key, token]) => localStorage.setItem(key, JSON.stringify({ token })),
      [`pollcast:presenter:${session.id}`, session.token],
    );
    await screen.keyboard.press('ArrowRight');
    await eventually(async () => assert.equal(await activePollId(server, session), quarter.pollId));
    await seeText(screen.getByTestId('screen-question'), 'How was the quarter?');
    await seeText(screen.getByTestId('poll-position'), 'Poll 2 of 3');
    for (const [i, ratingValue] of [5, 4, 4].entries()) await vote(server, quarter.pollId, voters[i], { ratingValue });
    await seeText(screen.getByTestId('rating-average'), '4.33');
    await eventually(async () => {
      const counts = await screen.getByTestId('rating-column').evaluateAll((columns) =>
        Object.fromEntries(columns.map((c) => [c.dataset.value, Number(c.querySelector('[data-testid="rating-count"]').textContent)])),
      );
      assert.deepEqual(counts, { 1: 0, 2: 0, 3: 0, 4: 2, 5: 1 });
    });
    await seeText(screen.getByTestId('vote-count'), '3 votes');
    await assertNoScrolling(screen);

    // ← shows the closed poll's final results again (on this screen only).
    await screen.keyboard.press('ArrowLeft');
    await seeText(screen.getByTestId('screen-question'), 'Where should the offsite be?');
    await seeText(screen.getByTestId('poll-status'), 'Earlier results');
    await seeChoices(screen, { Lisbon: 2, Berlin: 0, Kyoto: 1 });
    assert.equal(await activePollId(server, session), quarter.pollId);

    // Space goes forward: back to the open poll, then opens the next one.
    await screen.keyboard.press('Space');
    await seeText(screen.getByTestId('screen-question'), 'How was the quarter?');
    await screen.keyboard.press('Space');
    await eventually(async () => assert.equal(await activePollId(server, session), word.pollId));
    await seeText(screen.getByTestId('screen-question'), 'One word for next year?');
    const words = ['Focus', 'Ship it', 'Calm'];
    for (const [i, textResponse] of words.entries()) await vote(server, word.pollId, voters[i], { textResponse });
    await seeText(screen.getByTestId('vote-count'), '3 answers');
    if (word.resultsRevealed === false) {
      // The server withholds open text until the presenter shows it: the
      // screen has the count only, until the reveal brings the answers.
      await seeText(screen.getByTestId('withheld-count'), '3');
      assert.equal(await screen.getByTestId('text-answer').count(), 0);
      await ok(server, 'POST', `/v1/polls/${word.pollId}/reveal`, { token: session.token });
    }
    await eventually(async () => {
      const answers = await screen.getByTestId('text-answer').locator('.answer-text').allTextContents();
      assert.deepEqual([...answers].sort(), [...words].sort());
    });
    await assertNoScrolling(screen);

    // F asks the browser for full screen, and F again leaves it.
    await screen.keyboard.press('f');
    await eventually(async () => assert.ok(await screen.evaluate(() => document.fullscreenElement !== null)));
    await screen.keyboard.press('f');
    await eventually(async () => assert.ok(await screen.evaluate(() => document.fullscreenElement === null)));

    // The end: a thank-you with the final figures, no join panel.
    await ok(server, 'POST', `/v1/sessions/${session.id}/end`, { token: session.token });
    await seeText(screen.getByTestId('session-ended').locator('h2'), 'Session ended — thank you');
    const final = await ok(server, 'GET', `/v1/sessions/${session.id}`);
    const people = final.participantCount === 1 ? 'participant' : 'participants';
    await seeText(screen.getByTestId('ended-figures'), `${final.participantCount} ${people} · 9 responses to 3 polls`);
    assert.equal(await screen.getByTestId('join-panel').isVisible(), false);
    assert.deepEqual(screen.errors, []);
  } finally {
    await Promise.all(pages.map((page) => page.close()));
    await server.stop();
  }
});

test('the screen comes back by itself after the server restarts', { timeout: TEST_TIMEOUT }, async () => {
  const server = await new Pollcast().start();
  let screen;
  try {
    const session = await sessionWithPolls(server, 'Restart', [
      { question: 'Tea or coffee?', pollType: 'multiple_choice', options: ['Tea', 'Coffee'] },
    ]);
    const [drink] = session.polls;
    await ok(server, 'POST', `/v1/polls/${drink.pollId}/activate`, { token: session.token });
    const voters = await joinAll(server, session.code, ['Ada', 'Grace']);
    screen = await openScreen(server, session.id);
    await vote(server, drink.pollId, voters[0], { selectedOptionIds: [optionId(drink, 'Tea')] });
    await seeChoices(screen, { Tea: 1, Coffee: 0 });

    await server.restart();
    await vote(server, drink.pollId, voters[1], { selectedOptionIds: [optionId(drink, 'Coffee')] });
    await seeChoices(screen, { Tea: 1, Coffee: 1 }, 40_000);
    await eventually(async () => assert.equal(await screen.getByTestId('connection-status').getAttribute('data-state'), 'live'), 40_000);
    assert.equal(await screen.getByTestId('connection-status').isVisible(), false);
    assert.deepEqual(screen.errors, []);
  } finally {
    await screen?.close();
    await server.stop();
  }
});

test('withheld results, countdown and storage banner', { timeout: TEST_TIMEOUT }, async (t) => {
  const server = await new Pollcast({ store: 'memory' }).start();
  let screen;
  try {
    const session = await sessionWithPolls(server, 'Hidden', [
      { question: 'Pick a colour', pollType: 'multiple_choice', options: ['Red', 'Blue'], resultsVisibility: 'manual' },
      { question: 'Pick a number', pollType: 'multiple_choice', options: ['One', 'Two'] },
      { question: 'Quick: yes or no?', pollType: 'multiple_choice', options: ['Yes', 'No'] },
    ]);
    const [colour, number, quick] = session.polls;
    screen = await openScreen(server, session.id);
    await seeText(screen.getByTestId('welcome-wait'), 'Waiting for the first question…');
    const snapshot = await ok(server, 'GET', `/v1/sessions/${session.id}`);

    await t.test('the memory store says so on screen', async () => {
      assert.equal(snapshot.storage, 'memory');
      await seeText(screen.getByTestId('storage-banner'), 'This server keeps nothing on disk: a restart loses this session');
    });

    await t.test('withheld results show their count only, until revealed', async () => {
      assert.equal(colour.resultsVisibility, 'manual');
      await ok(server, 'POST', `/v1/polls/${colour.pollId}/activate`, { token: session.token });
      await seeText(screen.getByTestId('screen-question'), 'Pick a colour');
      const voters = await joinAll(server, session.code, ['Ada', 'Grace']);
      await vote(server, colour.pollId, voters[0], { selectedOptionIds: [optionId(colour, 'Red')] });
      await vote(server, colour.pollId, voters[1], { selectedOptionIds: [optionId(colour, 'Red')] });
      await seeText(screen.getByTestId('withheld-count'), '2');
      await seeText(screen.getByTestId('results-hidden'), /Results hidden\s*2 responses/);
      assert.equal(await screen.getByTestId('choice-results').count(), 0);
      assert.deepEqual(await screen.getByTestId('option-label').allTextContents(), ['Red', 'Blue']);
      assert.equal(await screen.getByTestId('choice-count').count(), 0);
      await ok(server, 'POST', `/v1/polls/${colour.pollId}/reveal`, { token: session.token });
      await seeChoices(screen, { Red: 2, Blue: 0 });
      await seeBarsMatchCounts(screen);
    });

    await t.test('a timed poll counts down on screen', async () => {
      const opened = await server.request('POST', `/v1/polls/${number.pollId}/activate`, {
        token: session.token,
        body: { durationSeconds: 30 },
      });
      assert.equal(opened.status, 200, JSON.stringify(opened.body));
      await seeText(screen.getByTestId('screen-question'), 'Pick a number');
      const poll = (await ok(server, 'GET', `/v1/sessions/${session.id}`)).polls.find((p) => p.pollId === number.pollId);
      assert.ok(poll.closesAt, 'the poll has no closesAt');
      await eventually(async () => {
        const seconds = Number(await screen.getByTestId('countdown').getAttribute('data-seconds'));
        assert.ok(seconds > 0 && seconds <= 30, `countdown at ${seconds}`);
      });
      await seeText(screen.getByTestId('countdown'), /^0:[0-3]\d$/);

      // A short one runs out: the server closes it and the screen says so.
      await ok(server, 'POST', `/v1/polls/${quick.pollId}/activate`, { token: session.token, body: { durationSeconds: 5 } });
      await seeText(screen.getByTestId('screen-question'), 'Quick: yes or no?');
      await seeText(screen.getByTestId('countdown'), /^0:0[0-5]$/);
      await seeText(screen.getByTestId('poll-status'), 'Time is up · final results');
      assert.equal(await screen.getByTestId('countdown').isVisible(), false);
    });
    assert.deepEqual(screen.errors, []);
  } finally {
    await screen?.close();
    await server.stop();
  }
});

test('a screen for an unknown session, or none, says what is wrong', { timeout: TEST_TIMEOUT }, async () => {
  const server = await new Pollcast({ store: 'memory' }).start();
  const pages = [];
  try {
    const unknown = '00000000-0000-4000-8000-000000000000';
    const answer = await server.request('GET', `/v1/sessions/${unknown}`);
    assert.equal(answer.status, 404);
    const screen = await openScreen(server, unknown);
    pages.push(screen);
    await seeText(screen.getByTestId('screen-problem').locator('h2'), 'Session not found');
    await seeText(screen.getByTestId('screen-problem').locator('p'), answer.body.error.message);
    assert.equal(await screen.getByTestId('join-panel').isVisible(), false);

    const bare = await browser.context.newPage();
    pages.push(bare);
    await bare.goto(`${server.url}/screen`);
    await seeText(bare.getByTestId('screen-problem').locator('h2'), 'No session');
    assert.deepEqual(screen.errors, []);
  } finally {
    await Promise.all(pages.map((page) => page.close()));
    await server.stop();
  }
});
