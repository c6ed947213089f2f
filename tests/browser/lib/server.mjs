// A real pollcast for the Node-driven tests: the release binary on a free
// loopback port, on Postgres (one database per server, dropped on stop) or
// on the memory store. `restart()` kills the process and starts it again on
// the same port and database, which is how the tests drop every client at
// once and check that they come back by themselves.
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const binary = process.env.POLLCAST_BIN ?? path.join(repoRoot, 'target/release/pollcast');
const pgAdminUrl = process.env.POLLCAST_TEST_PG ?? 'postgres://postgres@127.0.0.1:5432/postgres';

/** A loopback port nobody listens on right now. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

function psql(sql) {
  execFileSync('psql', [pgAdminUrl, '-v', 'ON_ERROR_STOP=1', '-Atqc', sql], { stdio: 'pipe' });
}

export function databaseUrl(name) {
  const url = new URL(pgAdminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Mints a generic token with the server's secret (`pollcast token`). */
export function mintToken(secret, { sub, publish = [], subscribe = [], ttl = '1h' } = {}) {
  const args = ['token', '--token-secret', secret, '--ttl', ttl];
  if (sub) args.push('--sub', sub);
  for (const p of publish) args.push('--publish', p);
  for (const s of subscribe) args.push('--subscribe', s);
  return execFileSync(binary, args, { encoding: 'utf8' }).trim();
}

export class Pollcast {
  /**
   * @param {object} options
   * @param {'postgres'|'memory'} [options.store]
   * @param {string[]} [options.args] extra command-line flags
   */
  constructor({ store = 'postgres', args = [] } = {}) {
    this.store = store;
    this.extraArgs = args;
    this.secret = randomBytes(24).toString('hex');
    this.child = null;
    this.log = [];
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  async start() {
    this.port ??= await freePort();
    if (this.store === 'postgres' && !this.database) {
      this.database = `pollcast_js_${randomBytes(6).toString('hex')}`;
      psql(`CREATE DATABASE ${this.database}`);
    }
    const args = ['--listen', `127.0.0.1:${this.port}`, '--token-secret', this.secret, ...this.extraArgs];
    if (this.database) args.push('--database-url', databaseUrl(this.database));
    this.child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' } });
    const keep = (chunk) => {
      this.log.push(chunk.toString());
      if (this.log.length > 500) this.log.shift();
    };
    this.child.stdout.on('data', keep);
    this.child.stderr.on('data', keep);
    await this.waitReady();
    return this;
  }

  async waitReady(timeoutMs = 15000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`pollcast exited: ${this.log.join('')}`);
      }
      try {
        const res = await fetch(`${this.url}/readyz`);
        if (res.ok) return;
      } catch { /* not listening yet */ }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`pollcast not ready in ${timeoutMs} ms: ${this.log.join('')}`);
  }

  /** Kills the process at once (SIGKILL): no goodbye to any client. */
  async kill() {
    // A process killed by a signal has a signalCode and no exitCode.
    if (!this.child || this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGKILL');
    await exited;
  }

  async restart() {
    await this.kill();
    await this.start();
  }

  async stop() {
    await this.kill();
    if (this.database) {
      psql(`DROP DATABASE IF EXISTS ${this.database} WITH (FORCE)`);
      this.database = undefined;
    }
  }

  /** JSON request helper: returns {status, headers, body}. */
  async request(method, pathname, { token, body, headers = {} } = {}) {
    const h = { ...headers };
    if (token) h.authorization = `Bearer ${token}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const res = await fetch(this.url + pathname, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    let parsed = text;
    try { parsed = JSON.parse(text); } catch { /* not JSON */ }
    return { status: res.status, headers: res.headers, body: parsed };
  }
}
