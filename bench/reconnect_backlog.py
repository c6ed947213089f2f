#!/usr/bin/env python3
"""Reconnect storm against a large event log, two pollcast binaries side by side.

Builds (or reuses) a Postgres database with a long `events` log (10 million
rows by default, ~2 GB), then for each binary in turn (old, new, old, new …)
starts the server on it and runs scenarios: N streams at once reconnecting
with `Last-Event-ID: <old id>` on a wildcard selector that is dense
(`bench:*`, 999 of every 1,000 events) or sparse (`rare:*`, 1 in 1,000).
Per stream it records the time to the response head, to the first frame
(`connection:reconnected`, with its `replayCount` and `replayCountExact`), to
the first replayed event, and how many events arrived within a window.
Meanwhile a bystander process probes the same server every 200 ms: GET
/healthz, GET /readyz (one pooled database round trip), a publish, and the
first frame of a fresh live stream; and samples the database's backends in
pg_stat_activity and the CPU of the server, of Postgres and of the machine.

Each scenario runs on a freshly started server and is bounded in time; after
the clients leave, the script waits (bounded) for the database to go quiet,
records how long that took (work the server left running), then stops the
server and cancels any query still running for that database, so that no
scenario inherits the previous one's load.

Python 3.11 standard library only (asyncio sockets, a minimal Postgres wire
client for sampling); psql for the setup.

  python3 bench/reconnect_backlog.py                       # build the DB, run, keep the DB
  python3 bench/reconnect_backlog.py --reuse               # reuse an existing filled DB
  python3 bench/reconnect_backlog.py --reuse --drop        # ... and drop it at the end
  python3 bench/reconnect_backlog.py --setup-only          # only build the DB
  python3 bench/reconnect_backlog.py --report target/reconnect-backlog/results.json   # Markdown tables
  python3 bench/reconnect_backlog.py --drop-only           # drop the DB

Results: a table on stdout, JSON in target/reconnect-backlog/results.json,
server logs beside it.
"""

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import platform
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "target" / "reconnect-backlog"
PG_HOST, PG_PORT, PG_USER = "127.0.0.1", 5432, "postgres"
SECRET = "bench-backlog-secret"
HOST = "127.0.0.1"
DENSE, SPARSE = "bench:*", "rare:*"
RARE_EVERY = 1000  # one event in this many is on a rare:<n> topic


def log(*parts):
    print(f"[backlog {time.strftime('%H:%M:%S')}]", *parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- psql --

def psql(sql, db="postgres", check=True):
    """Runs SQL with psql; returns stdout (unaligned, tuples only)."""
    out = subprocess.run(["psql", "-X", "-h", PG_HOST, "-p", str(PG_PORT), "-U", PG_USER, "-d", db,
                          "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql],
                         text=True, capture_output=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"psql failed: {out.stderr.strip()}\n{sql[:400]}")
    return out.stdout.strip()


def db_url(db):
    return f"postgres://{PG_USER}@{PG_HOST}:{PG_PORT}/{db}"


def db_exists(db):
    return psql(f"SELECT 1 FROM pg_database WHERE datname = '{db}'") == "1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# -------------------------------------------------------------- server --

class Server:
    def __init__(self, binary, db, label, extra=()):
        self.binary, self.db, self.label, self.extra = binary, db, label, list(extra)
        self.proc = None
        self.port = None

    def start(self, logname):
        self.port = free_port()
        OUT.mkdir(parents=True, exist_ok=True)
        self.logpath = OUT / logname
        cmd = [self.binary, "--listen", f"{HOST}:{self.port}", "--database-url", db_url(self.db),
               "--token-secret", SECRET, *self.extra]
        env = {k: v for k, v in os.environ.items() if not k.startswith("POLLCAST_") and k != "DATABASE_URL"}
        self.proc = subprocess.Popen(cmd, stdout=open(self.logpath, "wb"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with {self.proc.returncode}; see {self.logpath}")
            try:
                status, _ = http_get_sync(self.port, "/readyz", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"{self.binary} not ready after 120 s; see {self.logpath}")

    def stop(self):
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_summary(self):
        try:
            text = self.logpath.read_text(errors="replace")
        except OSError:
            return {}
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        warn = [l for l in text.splitlines() if " WARN " in l or " ERROR " in l]
        kinds = {}
        for line in warn:
            key = re.sub(r"^\S+\s+", "", line)          # drop the timestamp
            key = re.sub(r"\d+", "#", key)[:160]
            kinds[key] = kinds.get(key, 0) + 1
        return {"warn_or_error_lines": len(warn), "kinds": kinds}


def http_get_sync(port, path, timeout=2.0):
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data


def mint_token(binary):
    return subprocess.run([binary, "token", "--token-secret", SECRET, "--sub", "bench",
                           "--subscribe", DENSE, "--subscribe", SPARSE, "--publish", "live:*",
                           "--subscribe", "live:*", "--ttl", "2h"],
                          check=True, text=True, capture_output=True).stdout.strip()


# --------------------------------------------------------------- setup --

FILL_SQL = """
SET synchronous_commit = off;
INSERT INTO events (id, topic, type, trace_id, payload, created_at)
SELECT g,
       CASE WHEN g % {rare} = 0 THEN 'rare:' || ((g / {rare}) % 10) ELSE 'bench:' || (g % 16) END,
       CASE WHEN g % {rare} = 0 THEN 'rare:tick' ELSE 'bench:tick' END,
       md5(g::text),
       ('{{"seq":' || g || ',"user":"user-' || (g % 9973) || '","region":"eu-' || (g % 7)
         || '","note":"' || substr(md5((g + 1)::text) || md5((g + 2)::text) || md5((g + 3)::text)
                                   || md5((g + 4)::text), 1, 70 + (g % 50)) || '"}}')::json,
       now()
  FROM generate_series({lo}, {hi}) AS g;
"""


def setup(args):
    subprocess.run([str(ROOT / "scripts" / "ensure-postgres.sh")], check=True)
    db = args.db
    if db_exists(db):
        if args.recreate:
            log(f"dropping {db} (--recreate)")
            psql(f"DROP DATABASE {db} WITH (FORCE)")
        elif args.reuse:
            head = int(psql("SELECT coalesce(max(id), 0) FROM events", db=db) or 0)
            filled = psql("SELECT value FROM bench_fill WHERE key = 'rows'", db=db, check=False)
            if filled and int(filled) >= args.rows:
                log(f"reusing {db}: {filled} rows filled, head id {head}")
                return describe_db(db)
            raise SystemExit(f"{db} exists but was not filled with {args.rows} rows; use --recreate")
        else:
            raise SystemExit(f"{db} exists: pass --reuse to use it or --recreate to rebuild it")
    log(f"creating {db}")
    psql(f"CREATE DATABASE {db}")
    # Let the server apply its own migrations (the newest binary knows them all).
    server = Server(args.new, db, "migrate")
    server.start("migrate.log")
    server.stop()
    if int(psql("SELECT count(*) FROM events", db=db)) != 0:
        raise SystemExit(f"{db}: events is not empty after migrating")
    t = time.monotonic()
    step = 1_000_000
    for lo in range(1, args.rows + 1, step):
        hi = min(lo + step - 1, args.rows)
        psql(FILL_SQL.format(rare=RARE_EVERY, lo=lo, hi=hi), db=db)
        log(f"filled {hi:,} / {args.rows:,} rows ({time.monotonic() - t:.0f} s)")
    psql("SELECT setval('events_id_seq', (SELECT max(id) FROM events))", db=db)
    # log_state.pruned_through stays 0: nothing was pruned, every id is replayable.
    psql("CREATE TABLE bench_fill (key text PRIMARY KEY, value text NOT NULL)", db=db)
    psql(f"INSERT INTO bench_fill VALUES ('rows', '{args.rows}'), ('filled_at', now()::text)", db=db)
    log("VACUUM ANALYZE events")
    psql("VACUUM (ANALYZE) events", db=db)
    log(f"fill done in {time.monotonic() - t:.0f} s")
    return describe_db(db)


def describe_db(db):
    q = lambda sql: psql(sql, db=db)
    return {
        "db": db,
        "rows": int(q("SELECT count(*) FROM events")),
        "head": int(q("SELECT max(id) FROM events")),
        "rare_rows": int(q("SELECT count(*) FROM events WHERE topic LIKE 'rare:%'")),
        "table_bytes": int(q("SELECT pg_table_size('events')")),
        "total_relation_bytes": int(q("SELECT pg_total_relation_size('events')")),
        "database_bytes": int(q(f"SELECT pg_database_size('{db}')")),
        "avg_payload_bytes": float(q("SELECT avg(octet_length(payload::text)) FROM (SELECT payload FROM events TABLESAMPLE SYSTEM (0.1)) s")),
        "pruned_through": int(q("SELECT pruned_through FROM log_state")),
    }


# ------------------------------------------------ minimal Postgres client --

class PgWire:
    """Just enough of the v3 protocol for simple queries under trust auth."""

    async def connect(self, db="postgres"):
        self.r, self.w = await asyncio.open_connection(PG_HOST, PG_PORT)
        body = struct.pack("!i", 196608) + b"".join(
            k.encode() + b"\0" + v.encode() + b"\0"
            for k, v in (("user", PG_USER), ("database", db), ("application_name", "reconnect_backlog"))) + b"\0"
        self.w.write(struct.pack("!i", len(body) + 4) + body)
        await self._until_ready()

    async def _msg(self):
        head = await self.r.readexactly(5)
        kind, length = head[:1], struct.unpack("!i", head[1:])[0]
        return kind, await self.r.readexactly(length - 4)

    async def _until_ready(self):
        rows = []
        while True:
            kind, body = await self._msg()
            if kind == b"R" and struct.unpack("!i", body[:4])[0] != 0:
                raise RuntimeError("postgres asks for a password; trust auth expected")
            if kind == b"E":
                raise RuntimeError(f"postgres error: {body!r}")
            if kind == b"D":
                n = struct.unpack("!h", body[:2])[0]
                pos, row = 2, []
                for _ in range(n):
                    size = struct.unpack("!i", body[pos:pos + 4])[0]
                    pos += 4
                    if size < 0:
                        row.append(None)
                    else:
                        row.append(body[pos:pos + size].decode())
                        pos += size
                rows.append(row)
            if kind == b"Z":
                return rows

    async def query(self, sql):
        data = sql.encode() + b"\0"
        self.w.write(b"Q" + struct.pack("!i", len(data) + 4) + data)
        return await self._until_ready()

    def close(self):
        try:
            self.w.write(b"X\0\0\0\4")
            self.w.close()
        except Exception:
            pass


def db_activity_sql(db):
    return (f"SELECT count(*) FILTER (WHERE state = 'active'), count(*), "
            f"count(*) FILTER (WHERE backend_type = 'parallel worker'), "
            f"coalesce(extract(epoch FROM max(now() - query_start) FILTER (WHERE state = 'active')), 0) "
            f"FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()")


# ------------------------------------------------------------------ CPU --

CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid, children=False):
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / CLK


def postmaster_pid():
    try:
        data_dir = psql("SHOW data_directory")
        return int(open(f"{data_dir}/postmaster.pid").readline())
    except Exception:
        return None


def postgres_cpu(pm):
    """CPU seconds of every Postgres process so far: the live ones plus what
    the postmaster has reaped (so backends that exit in between still count)."""
    if pm is None:
        return 0.0
    total = proc_cpu(pm, children=True)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == pm:
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pm:  # ppid
            total += (int(fields[11]) + int(fields[12])) / CLK
    return total


def machine_cpu():
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) / CLK, (sum(fields) - idle) / CLK


# ------------------------------------------------------------ HTTP bits --

async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


async def chunks(reader, headers):
    """Yields body pieces (chunked or identity); returns at the body's end."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            line = await reader.readline()
            if not line:
                return
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            data = await reader.readexactly(size + 2)
            yield data[:-2]
    else:
        length = headers.get("content-length")
        left = int(length) if length is not None else None
        while left is None or left > 0:
            data = await reader.read(1 << 18 if left is None else min(left, 1 << 18))
            if not data:
                return
            if left is not None:
                left -= len(data)
            yield data


async def simple_request(port, method, path, token=None, body=None, timeout=10.0):
    """One request on a fresh connection; returns (status, seconds)."""
    t = time.monotonic()

    async def go():
        r, w = await asyncio.open_connection(HOST, port)
        try:
            lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Connection: close"]
            if token:
                lines.append(f"Authorization: Bearer {token}")
            payload = b""
            if body is not None:
                payload = body.encode()
                lines += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
            w.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
            status, headers = await read_head(r)
            async for _ in chunks(r, headers):
                pass
            return status
        finally:
            w.close()

    status = await asyncio.wait_for(go(), timeout)
    return status, time.monotonic() - t


def stream_request(path, token, last_id=None):
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}", f"Authorization: Bearer {token}",
             "Accept: text/event-stream", "Cache-Control: no-cache"]
    if last_id is not None:
        lines.append(f"Last-Event-ID: {last_id}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_frame(block):
    event, data = None, None
    for line in block.split(b"\n"):
        if line.startswith(b"event:"):
            event = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data = line[5:].strip()
    return event, data


async def new_stream_probe(port, token, timeout=10.0):
    """Time to the first frame of a fresh (live-only) stream; then closes it."""
    t = time.monotonic()

    async def go():
        r, w = await asyncio.open_connection(HOST, port)
        try:
            w.write(stream_request("/v1/events?topic=live:x", token))
            status, headers = await read_head(r)
            if status != 200:
                async for _ in chunks(r, headers):
                    pass
                return status, None
            buf = b""
            async for data in chunks(r, headers):
                buf += data
                if b"\n\n" in buf:
                    event, _ = parse_frame(buf.split(b"\n\n", 1)[0])
                    return status, event
            return status, "ended"
        finally:
            w.close()

    status, event = await asyncio.wait_for(go(), timeout)
    return status, event, time.monotonic() - t


# ---------------------------------------------------- reconnecting streams --

async def reconnect_stream(port, token, selector, last_id, t0, window, res):
    """One reconnecting client; fills `res` as things happen (so a cancel keeps them)."""
    res.update(status=None, headers_s=None, first_frame_s=None, first_frame=None, replay_count=None,
               replay_exact=None, first_event_s=None, first_event_id=None, events=0, events_in_window=0,
               last_id=None, ended_s=None, error=None)
    path = f"/v1/events?topic={quote(selector, safe=':*')}"
    try:
        r, w = await asyncio.open_connection(HOST, port, limit=1 << 20)
    except OSError as e:
        res["error"] = f"connect: {e}"
        return
    try:
        w.write(stream_request(path, token, last_id))
        status, headers = await read_head(r)
        res["status"], res["headers_s"] = status, time.monotonic() - t0
        if status != 200:
            body = b""
            async for data in chunks(r, headers):
                body += data
            res["error"] = f"HTTP {status}: {body[:200].decode(errors='replace')}"
            res["ended_s"] = time.monotonic() - t0
            return
        head = b""      # bytes until the first frame and first event are found
        carry = b""     # last 4 bytes, for counting "\nid: " across pieces
        pattern = b"\nid: "
        window_end = t0 + window
        async for data in chunks(r, headers):
            now = time.monotonic()
            if res["first_frame_s"] is None or res["first_event_s"] is None:
                head += data
                if res["first_frame_s"] is None and b"\n\n" in head:
                    res["first_frame_s"] = now - t0
                    event, payload = parse_frame(head.split(b"\n\n", 1)[0])
                    res["first_frame"] = event
                    try:
                        p = json.loads(payload).get("payload", {})
                        res["replay_count"] = p.get("replayCount")
                        res["replay_exact"] = p.get("replayCountExact")
                    except Exception:
                        pass
                if res["first_event_s"] is None:
                    i = head.find(pattern)
                    if i >= 0 and head.find(b"\n", i + 1) > 0:
                        res["first_event_s"] = now - t0
                        res["first_event_id"] = int(head[i + 5:head.find(b"\n", i + 1)])
                        head = b""
                elif res["first_frame_s"] is not None:
                    head = b""
            s = carry + data
            n = s.count(pattern)
            if n:
                res["events"] += n
                if now <= window_end:
                    res["events_in_window"] = res["events"]
                j = s.rfind(pattern)
                k = s.find(b"\n", j + 1)
                if k > 0:
                    res["last_id"] = int(s[j + 5:k])
            carry = s[-4:]
        res["ended_s"] = time.monotonic() - t0
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 - recorded, not fatal
        res["error"] = f"{type(e).__name__}: {e}"
        res["ended_s"] = time.monotonic() - t0
    finally:
        w.close()


# ------------------------------------------------------------ bystander --

def bystander_main(conn, port, token, db, t0, duration, interval):
    """Runs in its own process so the storm's reading does not delay its clock."""
    res = asyncio.run(bystander(port, token, db, t0, duration, interval))
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res["cpu_s"] = ru.ru_utime + ru.ru_stime
    conn.send(res)
    conn.close()


async def bystander(port, token, db, t0, duration, interval):
    end = t0 + duration
    out = {"healthz": [], "readyz": [], "publish": [], "new_stream": [], "pg": []}

    async def loop(name, probe):
        await asyncio.sleep(max(0.0, t0 - time.monotonic()))
        while True:
            start = time.monotonic()
            if start >= end:
                return
            try:
                status, extra, seconds = await probe(min(10.0, end + 5 - start))
                out[name].append({"t": start - t0, "s": seconds, "status": status, "extra": extra,
                                  "ok": 200 <= status < 300 and extra in (None, "connection:established")})
            except asyncio.TimeoutError:
                out[name].append({"t": start - t0, "s": time.monotonic() - start, "status": None,
                                  "extra": "timeout", "ok": False})
            except Exception as e:  # noqa: BLE001
                out[name].append({"t": start - t0, "s": time.monotonic() - start, "status": None,
                                  "extra": f"{type(e).__name__}: {e}", "ok": False})
            await asyncio.sleep(max(0.0, start + interval - time.monotonic()))

    async def healthz(timeout):
        status, s = await simple_request(port, "GET", "/healthz", timeout=timeout)
        return status, None, s

    async def readyz(timeout):
        status, s = await simple_request(port, "GET", "/readyz", timeout=timeout)
        return status, None, s

    async def publish(timeout):
        status, s = await simple_request(port, "POST", "/v1/topics/live:x/events", token=token,
                                         body='{"type":"live:tick","payload":{}}', timeout=timeout)
        return status, None, s

    async def new_stream(timeout):
        return await new_stream_probe(port, token, timeout=timeout)

    async def pg_sampler():
        pg = PgWire()
        await pg.connect("postgres")
        sql = db_activity_sql(db)
        try:
            await asyncio.sleep(max(0.0, t0 - time.monotonic()))
            while time.monotonic() < end:
                start = time.monotonic()
                row = (await pg.query(sql))[0]
                out["pg"].append({"t": start - t0, "active": int(row[0]), "connections": int(row[1]),
                                  "parallel": int(row[2]), "oldest_active_s": float(row[3])})
                await asyncio.sleep(max(0.0, start + interval - time.monotonic()))
        finally:
            pg.close()

    await asyncio.gather(loop("healthz", healthz), loop("readyz", readyz), loop("publish", publish),
                         loop("new_stream", new_stream), pg_sampler())
    return out


# ------------------------------------------------------------- scenarios --

def scenarios(args, head):
    out = [{"name": "quiet", "selector": None, "n": 0, "last_id": None, "duration": args.quiet}]
    out.append({"name": "near sparse ×1", "selector": SPARSE, "n": 1, "last_id": head - 5000,
                "duration": args.quiet})
    for n in args.sizes:
        for sel, label in ((DENSE, "dense"), (SPARSE, "sparse")):
            out.append({"name": f"{label} ×{n}", "selector": sel, "n": n, "last_id": 1, "duration": args.duration})
        if n == args.mid_size:
            out.append({"name": f"mid dense ×{n}", "selector": DENSE, "n": n, "last_id": head // 2,
                        "duration": args.duration})
    return [s for s in out if not args.only or s["name"] in args.only]


async def run_streams(port, token, sc, t0):
    results = [{} for _ in range(sc["n"])]
    await asyncio.sleep(max(0.0, t0 - time.monotonic()))
    tasks = [asyncio.create_task(reconnect_stream(port, token, sc["selector"], sc["last_id"], t0,
                                                  WINDOW, res)) for res in results]
    await asyncio.sleep(max(0.0, t0 + sc["duration"] - time.monotonic()))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return results


WINDOW = 10.0


async def wait_quiet(db, cap):
    """Seconds until no backend of `db` is active (None: still busy at the cap)."""
    pg = PgWire()
    await pg.connect("postgres")
    t = time.monotonic()
    try:
        while True:
            row = (await pg.query(db_activity_sql(db)))[0]
            if int(row[0]) == 0:
                return time.monotonic() - t
            if time.monotonic() - t > cap:
                return None
            await asyncio.sleep(0.25)
    finally:
        pg.close()


def run_scenario(args, binary_label, binary, token, sc, rnd, pm):
    server = Server(binary, args.db, binary_label, ["--max-catchups", str(args.max_catchups)]
                    if binary_label == "new" and args.max_catchups else [])
    slug = re.sub(r"[^a-z0-9]+", "-", sc["name"].lower()).strip("-")
    server.start(f"server-r{rnd}-{binary_label}-{slug}.log")
    # A starting server runs a retention pass at once (and every 60 s). Under
    # the pool's plan_cache_mode=force_generic_plan, prune_events' max(id)
    # WHERE created_at < cutoff walks the whole primary key backwards: seconds
    # on this log. Let it finish so that it does not land inside the scenario.
    time.sleep(0.3)
    startup_busy = asyncio.run(wait_quiet(args.db, 60))
    time.sleep(0.2)
    t0 = time.monotonic() + 0.5
    parent, child = multiprocessing.Pipe(duplex=False)
    by = multiprocessing.get_context("fork").Process(
        target=bystander_main, args=(child, server.port, token, args.db, t0, sc["duration"], args.interval))
    by.start()
    cpu_server0, cpu_pg0, (mt0, mb0) = proc_cpu(server.proc.pid), postgres_cpu(pm), machine_cpu()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    streams = asyncio.run(run_streams(server.port, token, sc, t0)) if sc["n"] else []
    time.sleep(max(0.0, t0 + sc["duration"] - time.monotonic()))
    cpu_server1, cpu_pg1, (mt1, mb1) = proc_cpu(server.proc.pid), postgres_cpu(pm), machine_cpu()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    by_res = parent.recv() if parent.poll(60) else {"error": "bystander gave no result"}
    by.join(10)
    # Every client has left: how long does the database stay busy?
    drain = asyncio.run(wait_quiet(args.db, args.drain_cap))
    server_alive = server.proc.poll() is None
    server.stop()
    terminated = 0
    if drain is None:
        terminated = int(psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                              f"WHERE datname = '{args.db}' AND pid <> pg_backend_pid()") or 0)
        asyncio.run(wait_quiet(args.db, 30))
    return {
        "round": rnd, "binary": binary_label, "scenario": sc["name"], "selector": sc["selector"],
        "n": sc["n"], "last_id": sc["last_id"], "duration": sc["duration"], "window": WINDOW,
        "streams": streams, "bystander": by_res,
        "server_cpu_s": cpu_server1 - cpu_server0, "postgres_cpu_s": cpu_pg1 - cpu_pg0,
        "client_cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime) + by_res.get("cpu_s", 0.0),
        "machine_busy": (mb1 - mb0) / (mt1 - mt0) if mt1 > mt0 else None,
        "drain_s": drain, "terminated_backends": terminated, "server_alive_at_end": server_alive,
        "startup_busy_s": startup_busy,
        "server_log": server.log_summary(),
    }


# ------------------------------------------------------------- summary --

def pct(values, q):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    k = max(0, min(len(values) - 1, math.ceil(q / 100 * len(values)) - 1))
    return values[k]


def summarize(r):
    st = r["streams"]
    by = r["bystander"]
    s = {"round": r["round"], "binary": r["binary"], "scenario": r["scenario"], "n": r["n"],
         "duration": r["duration"], "startup_busy_s": r.get("startup_busy_s")}
    if st:
        # A stream that never got there counts as later than any that did.
        ff = [math.inf if x["first_frame_s"] is None else x["first_frame_s"] for x in st]
        fe = [math.inf if x["first_event_s"] is None else x["first_event_s"] for x in st]
        s.update(
            headers_p50=pct([x["headers_s"] for x in st], 50), headers_max=pct([x["headers_s"] for x in st], 100),
            first_frame_p50=pct(ff, 50), first_frame_max=pct(ff, 100),
            no_first_frame=sum(1 for v in ff if v == math.inf),
            first_event_p50=pct(fe, 50), first_event_max=pct(fe, 100),
            no_first_event=sum(1 for v in fe if v == math.inf),
            replay_counts=sorted({x["replay_count"] for x in st if x["replay_count"] is not None}),
            replay_exact=sorted({str(x["replay_exact"]) for x in st if x["first_frame"]}),
            first_frames=sorted({str(x["first_frame"]) for x in st}),
            events_window_total=sum(x["events_in_window"] for x in st),
            events_window_p50=pct([x["events_in_window"] for x in st], 50),
            events_total=sum(x["events"] for x in st),
            last_id_p50=pct([x["last_id"] for x in st], 50),
            ended_early=sum(1 for x in st if x["ended_s"] is not None),
            errors=sorted({x["error"] for x in st if x["error"]}),
            statuses=sorted({str(x["status"]) for x in st}),
        )
    for name in ("healthz", "readyz", "publish", "new_stream"):
        samples = by.get(name, [])
        lat = [x["s"] for x in samples]
        s[name] = {"n": len(samples), "p50": pct(lat, 50), "p99": pct(lat, 99), "max": pct(lat, 100),
                   "failed": sum(1 for x in samples if not x["ok"]),
                   "failures": sorted({f"{x['status']} {x['extra']}" for x in samples if not x["ok"]})}
    pg = by.get("pg", [])
    s["active_max"] = max((x["active"] for x in pg), default=None)
    s["active_mean"] = sum(x["active"] for x in pg) / len(pg) if pg else None
    s["connections_max"] = max((x["connections"] for x in pg), default=None)
    s["parallel_max"] = max((x["parallel"] for x in pg), default=None)
    s["oldest_active_max"] = max((x["oldest_active_s"] for x in pg), default=None)
    for k in ("server_cpu_s", "postgres_cpu_s", "client_cpu_s", "machine_busy", "drain_s",
              "terminated_backends", "server_alive_at_end"):
        s[k] = r[k]
    s["server_warnings"] = r["server_log"].get("warn_or_error_lines", 0)
    return s


def ms(v):
    if v == math.inf:
        return "none"
    return "—" if v is None else (f"{v * 1000:.0f}" if v < 10 else f"{v * 1000:,.0f}")


def secs(v, limit=None):
    if v == math.inf:
        return f"> {limit:.0f} s" if limit else "none"
    return "—" if v is None else f"{v:.2f} s"


def print_table(summaries, drain_cap, header=True):
    cols = ["rnd", "bin", "scenario", "hdr p50", "1st frame p50/max", "1st event p50/max", "events≤10s",
            "count", "healthz p50/p99/max ms", "readyz p50/p99/max ms (fail)", "publish p50/p99/max ms (fail)",
            "new stream p50/p99/max ms (fail)", "active max/mean", "srv/pg CPU s", "drain"]
    if header:
        print(" | ".join(cols))
    for s in summaries:
        def lat(name):
            b = s[name]
            return f"{ms(b['p50'])}/{ms(b['p99'])}/{ms(b['max'])}" + (f" ({b['failed']})" if b["failed"] else "")
        row = [str(s["round"]), s["binary"], s["scenario"]]
        if s["n"]:
            nf = f" [{s['no_first_frame']} none]" if s["no_first_frame"] else ""
            ne = f" [{s['no_first_event']} none]" if s["no_first_event"] else ""
            row += [ms(s["headers_p50"]), f"{ms(s['first_frame_p50'])}/{ms(s['first_frame_max'])}{nf}",
                    f"{ms(s['first_event_p50'])}/{ms(s['first_event_max'])}{ne}",
                    f"{s['events_window_total']:,}", f"{s['replay_counts'][:2]} exact={s['replay_exact']}"]
        else:
            row += ["", "", "", "", ""]
        row += [lat("healthz"), lat("readyz"), lat("publish"), lat("new_stream"),
                f"{s['active_max']}/{s['active_mean']:.1f}" if s["active_mean"] is not None else "—",
                f"{s['server_cpu_s']:.1f}/{s['postgres_cpu_s']:.1f}",
                "—" if s["drain_s"] is None and s["terminated_backends"] else (
                    f"{s['drain_s']:.1f} s" if s["drain_s"] is not None else f">{drain_cap} s")]
        print(" | ".join(row))


def markdown(results):
    """Markdown tables for BENCHMARKS.md: one per scenario, old vs new per round."""
    sums = [summarize(r) for r in results["runs"]]
    order = []
    for s in sums:
        if s["scenario"] not in order:
            order.append(s["scenario"])
    lines = []
    cap = results["args"]["drain_cap"]
    for name in order:
        rows = [s for s in sums if s["scenario"] == name]
        lines += [f"**{name}**", ""]
        header = ["binary (round)"]
        if rows[0]["n"]:
            header += ["first frame p50 / max", "first event p50 / max",
                       f"events in {min(results['args']['window'], rows[0]['duration']):.0f} s / "
                       f"{rows[0]['duration']:.0f} s (all streams)",
                       "replayCount (exact)"]
        header += ["healthz p50 / p99 / max", "publish p50 / p99 / max", "new stream p50 / p99 / max",
                   "readyz p50 / p99 / max", "active backends max / mean", "server / Postgres CPU",
                   "DB busy after clients left"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for s in sorted(rows, key=lambda s: (s["binary"] != "old", s["round"])):
            def lat(name):
                b = s[name]
                fail = f", **{b['failed']} of {b['n']} failed**" if b["failed"] else ""
                return f"{ms(b['p50'])} / {ms(b['p99'])} / {ms(b['max'])} ms{fail}"
            row = [f"{s['binary']} ({s['round']})"]
            if s["n"]:
                d = s["duration"]
                nf = f" ({s['no_first_frame']} of {s['n']} none)" if s["no_first_frame"] else ""
                ne = f" ({s['no_first_event']} of {s['n']} none)" if s["no_first_event"] else ""
                counts = s["replay_counts"]
                rc = (f"{counts[0]:,}" if len(counts) == 1 else f"{counts[0]:,}–{counts[-1]:,}") if counts else ""
                exact = "/".join("absent" if x == "None" else x.lower() for x in s["replay_exact"])
                rcx = f"{rc} ({exact})" if counts else "no frame"
                row += [f"{secs(s['first_frame_p50'], d)} / {secs(s['first_frame_max'], d)}{nf}",
                        f"{secs(s['first_event_p50'], d)} / {secs(s['first_event_max'], d)}{ne}",
                        f"{s['events_window_total']:,} / {s['events_total']:,}", rcx]
            drain = (f"{s['drain_s']:.1f} s" if s["drain_s"] is not None
                     else f"> {cap} s ({s['terminated_backends']} cancelled)")
            row += [lat("healthz"), lat("publish"), lat("new_stream"), lat("readyz"),
                    f"{s['active_max']} / {s['active_mean']:.1f}",
                    f"{s['server_cpu_s']:.1f} / {s['postgres_cpu_s']:.1f} s", drain]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def summary_markdown(results):
    """One line per storm scenario: old against new, each round's value."""
    sums = [summarize(r) for r in results["runs"]]
    order = []
    for s in sums:
        if s["n"] > 1 or (s["n"] == 1 and s["scenario"].startswith(("dense", "sparse"))):
            if s["scenario"] not in order:
                order.append(s["scenario"])

    def both(name, f):
        out = []
        for label in ("old", "new"):
            vals = [f(s) for s in sorted(sums, key=lambda s: s["round"])
                    if s["scenario"] == name and s["binary"] == label]
            out.append(" / ".join(vals))
        return out

    def t(v, d):
        return secs(v, d).replace(" s", "") if v != math.inf else f">{d:.0f}"

    header = ["scenario", "first frame p50, s: old", "new", "first event p50, s: old", "new",
              f"events in {results['args']['duration']:.0f} s: old", "new", "publish p99, ms: old", "new", "readyz failed: old", "new",
              "active backends max: old", "new"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in order:
        row = [name]
        row += both(name, lambda s: t(s["first_frame_p50"], s["duration"]))
        row += both(name, lambda s: t(s["first_event_p50"], s["duration"]))
        row += both(name, lambda s: f"{s['events_total'] / 1e6:.2f} M" if s["events_total"] >= 100_000
                    else f"{s['events_total']:,}")
        row += both(name, lambda s: ms(s["publish"]["p99"]))
        row += both(name, lambda s: f"{s['readyz']['failed']} of {s['readyz']['n']}")
        row += both(name, lambda s: str(s["active_max"]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def machine_facts():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
    return {"cpus": os.cpu_count(), "cpu": cpu, "mem": mem, "kernel": platform.release(),
            "postgres": psql("SHOW server_version"), "shared_buffers": psql("SHOW shared_buffers"),
            "max_parallel_workers_per_gather": psql("SHOW max_parallel_workers_per_gather"),
            "max_connections": psql("SHOW max_connections"), "python": platform.python_version()}


# ---------------------------------------------------------------- main --

def main():
    global WINDOW
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="pollcast_bench_backlog")
    p.add_argument("--rows", type=int, default=10_000_000)
    # Two builds to compare: for instance a copy of target/release/pollcast
    # built at the commit before a change (--old) and one built after it.
    p.add_argument("--old", help="the pollcast binary to compare against (required to run scenarios)")
    p.add_argument("--new", default=str(ROOT / "target" / "release" / "pollcast"), help="the pollcast binary measured")
    p.add_argument("--rounds", type=int, default=2, help="rounds of old then new (alternated)")
    p.add_argument("--sizes", default="1,6,50", help="concurrent reconnects per scenario")
    p.add_argument("--mid-size", type=int, default=6, help="N for the scenario resuming mid-log (0: none)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per storm scenario")
    p.add_argument("--quiet", type=float, default=6.0, help="seconds of the quiet and near scenarios")
    p.add_argument("--window", type=float, default=10.0, help="events counted within this many seconds")
    p.add_argument("--interval", type=float, default=0.2, help="bystander probe interval")
    p.add_argument("--drain-cap", type=float, default=30.0,
                   help="seconds to wait for the database to go quiet after a scenario before cancelling")
    p.add_argument("--max-catchups", type=int, default=0, help="pass --max-catchups to the new binary (0: default)")
    p.add_argument("--only", default="", help="comma-separated scenario names")
    p.add_argument("--reuse", action="store_true", help="reuse the database if it is already filled")
    p.add_argument("--recreate", action="store_true", help="drop and rebuild the database if it exists")
    p.add_argument("--setup-only", action="store_true")
    p.add_argument("--drop", action="store_true", help="drop the database at the end")
    p.add_argument("--drop-only", action="store_true")
    p.add_argument("--report", metavar="JSON", help="print Markdown tables from a results file and exit")
    p.add_argument("--out", default=str(OUT / "results.json"))
    args = p.parse_args()
    if args.report:
        results = json.loads(Path(args.report).read_text())
        print(summary_markdown(results))
        print()
        print(markdown(results))
        return
    if args.drop_only:
        size = psql(f"SELECT pg_size_pretty(pg_database_size('{args.db}'))") if db_exists(args.db) else None
        psql(f"DROP DATABASE IF EXISTS {args.db} WITH (FORCE)")
        log(f"dropped {args.db} ({size})")
        return
    args.sizes = [int(x) for x in args.sizes.split(",") if x]
    args.only = {x.strip() for x in args.only.split(",") if x.strip()}
    WINDOW = args.window
    started = time.time()
    info = setup(args)
    log(f"log: {info}")
    if args.setup_only:
        return
    if not args.old:
        p.error("--old is required to run the scenarios")
    # Same cache state for every binary: read the heap and the primary key once
    # before the first scenario (the first one run would otherwise pay for it).
    t = time.monotonic()
    psql("SELECT count(*) FROM events", db=args.db)
    psql("SET enable_seqscan = off; SELECT count(*) FROM events WHERE id > 0", db=args.db)
    info["warm_up_s"] = time.monotonic() - t
    log(f"warm-up reads: {info['warm_up_s']:.1f} s")
    pm = postmaster_pid()
    binaries = {"old": args.old, "new": args.new}
    tokens = {k: mint_token(v) for k, v in binaries.items()}
    plan = scenarios(args, info["head"])
    results = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
               "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
               "machine": machine_facts(), "log": info,
               "args": {k: (sorted(v) if isinstance(v, set) else v) for k, v in vars(args).items()},
               "runs": []}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for rnd in range(1, args.rounds + 1):
        for label in ("old", "new"):
            for sc in plan:
                log(f"round {rnd} {label}: {sc['name']} ({sc['duration']:.0f} s)")
                r = run_scenario(args, label, binaries[label], tokens[label], sc, rnd, pm)
                results["runs"].append(r)
                print_table([summarize(r)], args.drain_cap, header=not results["runs"][:-1])
                sys.stdout.flush()
                out.write_text(json.dumps(results, indent=1))
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results["log_after"] = describe_db(args.db)
    out.write_text(json.dumps(results, indent=1))
    print()
    print_table([summarize(r) for r in results["runs"]], args.drain_cap)
    print()
    print(summary_markdown(results))
    print()
    print(markdown(results))
    log(f"wrote {out}; {time.time() - started:.0f} s in all")
    if args.drop:
        size = psql(f"SELECT pg_size_pretty(pg_database_size('{args.db}'))")
        psql(f"DROP DATABASE {args.db} WITH (FORCE)")
        log(f"dropped {args.db} ({size})")


if __name__ == "__main__":
    main()
