// Runs docs/recipes.md as written, so that its recipes cannot rot.
//
// The page's code blocks are the test: every block is marked by an HTML
// comment just before it (invisible on GitHub), and an unmarked `sh`, `js`
// or `text` block fails the run, so nothing in the page escapes it.
//
//   <!-- run -->            the next ```sh block runs in the recipes' shell;
//                           a ```text block right after it (blank lines
//                           between at most) is its expected output
//   <!-- run: browser -->   the next ```js block is loaded into the page
//   <!-- not run: why -->   the next block is shown only (e.g. `make run`)
//   <!-- browser: EXPR -->  evaluates EXPR in the page (awaited); `$NAME`
//                           is the shell variable NAME, as a JS string
//   <!-- browser-returns: V -->  the last EXPR's value, as a string, is V
//   <!-- browser-wait: EXPR -->  waits (10 s at most) until EXPR is truthy
//   <!-- browser-shows -->  the next ```text block is what the page passed
//                           to `show()` since the last such check, line by
//                           line, waiting 10 s at most for it
//
// In expected text, `…` stands for any run of characters within a line.
//
// One shell (bash, kept open, so variables and background streams carry
// over from block to block, as in a terminal) runs the `sh` blocks in
// order in target/recipes-run/, where their files and outputs stay for
// inspection. The release server runs on a free loopback port on a
// Postgres database of its own (dropped at the end), with a fresh token
// secret and `--grace-period 1s`; the shell gets B, POLLCAST_TOKEN_SECRET
// and PATH for it, as the page's "Before you start" says. The `js` blocks
// run in Debian's headless Chromium (playwright-core, as tests/browser) on
// a page of that same server, so relative URLs in them work as in a page
// the server would serve; `show(text)` records what they show.
//
// Run by `make recipes` (part of `make test`): needs `make release`,
// `make browser-tools` and the local Postgres (`make postgres`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { Pollcast, databaseUrl, repoRoot } from '../browser/lib/server.mjs';
import { launchChromium } from '../browser/lib/browser.mjs';

const docPath = path.join(repoRoot, 'docs/recipes.md');
const runDir = path.join(repoRoot, 'target/recipes-run');
const binDir = path.dirname(process.env.POLLCAST_BIN ?? path.join(repoRoot, 'target/release/pollcast'));
const STEP_TIMEOUT_MS = 30_000;
const WAIT_MS = 10_000;

// --- the page, read into steps ------------------------------------------------

const MARKER = /^<!--\s*(run: browser|run|not run(?::[^>]*)?|browser-shows|browser: (.+?)|browser-wait: (.+?)|browser-returns: (.+?))\s*-->$/;

/** Reads the page into sections of steps; throws on a block nobody runs. */
export function parseRecipes(markdown) {
  const lines = markdown.split('\n');
  const sections = [];
  let section = { title: '(top)', steps: [] };
  sections.push(section);
  let pending = null;          // a block marker waiting for its block
  let lastRun = null;          // the last `sh` step, while only blank lines follow it
  const fail = (n, why) => { throw new Error(`docs/recipes.md:${n + 1}: ${why}`); };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (line.trim() === '') continue;
    const fence = /^```(\w*)/.exec(line);
    if (fence) {
      const lang = fence[1];
      const start = i;
      const body = [];
      for (i++; i < lines.length && !lines[i].startsWith('```'); i++) body.push(lines[i]);
      if (i >= lines.length) fail(start, 'unclosed code block');
      const code = body.join('\n');
      const at = start + 1;
      if (pending) {
        const { kind } = pending;
        pending = null;
        if (kind === 'run' && lang === 'sh') {
          lastRun = { kind: 'sh', code, line: at };
          section.steps.push(lastRun);
          continue;
        }
        if (kind === 'run: browser' && lang === 'js') section.steps.push({ kind: 'js', code, line: at });
        else if (kind === 'browser-shows' && lang === 'text') section.steps.push({ kind: 'shows', expected: code, line: at });
        else if (!kind.startsWith('not run')) fail(start, `<!-- ${kind} --> cannot mark a \`${lang}\` block`);
      } else if (lang === 'text' && lastRun && lastRun.expected === undefined) {
        lastRun.expected = code;
      } else if (['sh', 'bash', 'js', 'html', 'text'].includes(lang)) {
        fail(start, `a \`${lang}\` block without a marker: mark it <!-- run -->, <!-- run: browser --> or <!-- not run: why -->`);
      }
      lastRun = null;
      continue;
    }
    lastRun = null;
    const marker = MARKER.exec(line.trim());
    if (pending) fail(i, `<!-- ${pending.kind} --> is not followed by a code block`);
    if (marker) {
      const [, kind, call, wait, returns] = marker;
      if (call !== undefined) section.steps.push({ kind: 'call', expr: call, line: i + 1 });
      else if (wait !== undefined) section.steps.push({ kind: 'wait', expr: wait, line: i + 1 });
      else if (returns !== undefined) section.steps.push({ kind: 'returns', value: returns, line: i + 1 });
      else pending = { kind };
    } else if (line.startsWith('<!--')) {
      fail(i, `unknown marker ${line.trim()}`);
    } else if (line.startsWith('## ')) {
      section = { title: line.slice(3).trim(), steps: [] };
      sections.push(section);
    }
  }
  if (pending) fail(lines.length - 1, `<!-- ${pending.kind} --> is not followed by a code block`);
  return sections.filter((s) => s.steps.length > 0);
}

/** `expected` (with `…` for any characters) matches `actual`, line by line. */
export function sameText(expected, actual) {
  const want = expected.trimEnd().split('\n');
  const got = actual.trimEnd().split('\n');
  if (want.length !== got.length) return false;
  const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return want.every((line, n) => new RegExp(`^${line.trimEnd().split('…').map(escape).join('.*')}$`).test(got[n].trimEnd()));
}

// --- the shell -----------------------------------------------------------------

/** One bash kept open: variables and background jobs live on between steps. */
class Shell {
  constructor(cwd, env) {
    this.cwd = cwd;
    this.count = 0;
    this.out = '';
    this.waiters = [];
    this.proc = spawn('bash', ['--noprofile', '--norc'], { cwd, env, stdio: ['pipe', 'pipe', 'inherit'] });
    this.proc.stdout.on('data', (chunk) => {
      this.out += chunk.toString();
      for (const w of [...this.waiters]) w();
    });
  }

  /** Waits for the line `<tag> <rest>` on the shell's own stdout; returns rest. */
  reply(tag) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { done(); reject(new Error(`no answer from the shell in ${STEP_TIMEOUT_MS} ms`)); }, STEP_TIMEOUT_MS);
      const check = () => {
        const m = new RegExp(`^${tag} (.*)$`, 'm').exec(this.out);
        if (!m) return;
        this.out = this.out.slice(m.index + m[0].length);
        done();
        resolve(m[1]);
      };
      const done = () => { clearTimeout(timer); this.waiters = this.waiters.filter((w) => w !== check); };
      this.waiters.push(check);
      check();
    });
  }

  /** Runs a block as if typed in a terminal; returns its exit status and output. */
  async run(code) {
    const n = ++this.count;
    const file = `step-${String(n).padStart(2, '0')}`;
    writeFileSync(path.join(this.cwd, `${file}.sh`), `${code}\n`);
    this.proc.stdin.write(`source ${file}.sh > ${file}.out 2>&1 < /dev/null; echo "__done_${n} $?"\n`);
    const status = Number(await this.reply(`__done_${n}`));
    return { status, output: readFileSync(path.join(this.cwd, `${file}.out`), 'utf8') };
  }

  /** The value of a shell variable. */
  async value(name) {
    const n = ++this.count;
    this.proc.stdin.write(`printf '__value_${n} %s\\n' "$${name}"\n`);
    return this.reply(`__value_${n}`);
  }

  /** Ends the background streams the recipes started, then the shell. */
  async close() {
    const exited = new Promise((r) => this.proc.once('exit', r));
    this.proc.stdin.end('kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; exit 0\n');
    await exited;
  }
}

// --- the run ---------------------------------------------------------------------

const sections = parseRecipes(readFileSync(docPath, 'utf8'));
let server;
let shell;
let browser;
let page;
const pageErrors = [];

before(async () => {
  rmSync(runDir, { recursive: true, force: true });
  mkdirSync(runDir, { recursive: true });
  server = await new Pollcast({ args: ['--grace-period', '1s'] }).start();
  shell = new Shell(runDir, {
    ...process.env,
    B: server.url,
    POLLCAST_TOKEN_SECRET: server.secret,
    // For the SQL recipe's psql: the server's own database.
    DATABASE_URL: databaseUrl(server.database),
    PATH: `${binDir}:${process.env.PATH}`,
  });
  browser = await launchChromium();
  page = browser.context.pages()[0] ?? await browser.context.newPage();
  page.on('pageerror', (error) => pageErrors.push(String(error)));
  await page.goto(`${server.url}/healthz`);
  await page.evaluate(() => {
    window.shown = [];
    window.show = (text) => window.shown.push(String(text));
  });
});

after(async () => {
  await shell?.close();
  await browser?.close();
  if (server) {
    writeFileSync(path.join(runDir, 'server.log'), server.log.join(''));
    await server.stop();
  }
});

async function until(what, check) {
  const deadline = Date.now() + WAIT_MS;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last.ok) return last;
    await new Promise((r) => setTimeout(r, 100));
  }
  return last ?? { ok: false, detail: what };
}

/** `$NAME` in a browser expression: the shell variable, as a JS string. */
async function substitute(expr) {
  let out = expr;
  for (const [token, name] of [...expr.matchAll(/\$([A-Z_][A-Z0-9_]*)/g)]) {
    out = out.replace(token, JSON.stringify(await shell.value(name)));
  }
  return out;
}

let lastValue;
let shownMark = 0;

async function runStep(step) {
  const where = `docs/recipes.md:${step.line}`;
  switch (step.kind) {
    case 'sh': {
      const { status, output } = await shell.run(step.code);
      if (output.trim()) process.stdout.write(`${where}\n${output.trimEnd().replace(/^/gm, '  ')}\n`);
      assert.equal(status, 0, `${where}: the block exited with ${status}:\n${step.code}\n--- its output:\n${output}`);
      if (step.expected !== undefined) {
        assert.ok(sameText(step.expected, output),
          `${where}: the output differs from the page.\n--- the page says:\n${step.expected}\n--- the block printed:\n${output}`);
      }
      break;
    }
    case 'js':
      await page.addScriptTag({ content: step.code });
      break;
    case 'call': {
      const expr = await substitute(step.expr);
      lastValue = await page.evaluate(async (source) => {
        const value = await (0, eval)(source);
        return value === undefined || typeof value === 'object' ? null : value;
      }, expr);
      break;
    }
    case 'returns':
      assert.equal(String(lastValue), step.value, `${where}: the page's call returned ${lastValue}, the page says ${step.value}`);
      break;
    case 'wait': {
      const result = await until(step.expr, async () => ({ ok: await page.evaluate((source) => Boolean((0, eval)(source)), step.expr) }));
      assert.ok(result.ok, `${where}: still not true after ${WAIT_MS} ms: ${step.expr}`);
      break;
    }
    case 'shows': {
      let lines = [];
      const result = await until('shown', async () => {
        lines = (await page.evaluate(() => window.shown.slice())).slice(shownMark);
        return { ok: sameText(step.expected, lines.join('\n')) };
      });
      process.stdout.write(`${where} (the page showed)\n${lines.join('\n').replace(/^/gm, '  ')}\n`);
      shownMark += lines.length;    // the next check starts after these, whatever this one says
      assert.ok(result.ok, `${where}: the page showed something else.\n--- the page says:\n${step.expected}\n--- it showed:\n${lines.join('\n')}`);
      break;
    }
    default:
      throw new Error(`unknown step ${step.kind}`);
  }
  assert.deepEqual(pageErrors, [], `${where}: errors in the page`);
}

test('every code block of docs/recipes.md is run or marked as shown only', () => {
  assert.ok(sections.length >= 3, 'the page has its recipes');
  assert.ok(sections.every((s) => s.steps.some((step) => step.kind === 'js') || s.title === 'Before you start'),
    'every recipe has browser code');
});

for (const section of sections) {
  test(`recipe: ${section.title}`, async () => {
    for (const step of section.steps) await runStep(step);
  });
}
