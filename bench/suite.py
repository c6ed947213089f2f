#!/usr/bin/env python3
"""The benchmark suite behind `make bench`.

Runs every workload of the benchmarks issue on this machine, pollcast and its
peers side by side in one invocation (Nchan on nginx for fan-out, pgbench and
psql COPY for the database-bound workloads), and rewrites BENCHMARKS.md with
the numbers, the ratios, the exact commands and the machine.

Usage: bench/suite.py [--quick] [--only NAME,...]
  --quick   smaller sizes (for trying the suite itself, not for the record)
"""

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "bench"
BIN = ROOT / "target" / "release"
SECRET = "bench-secret"
PG_ADMIN = os.environ.get("POLLCAST_BENCH_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_DB = "pollcast_bench"
PG_URL = f"postgres://postgres@127.0.0.1:5432/{PG_DB}"
PORTS = {"pg": 18180, "mem": 18181, "hyper": 18182, "nchan": 18190}

COMMANDS = []  # every load command run, for BENCHMARKS.md
PARTIAL = set()  # the workloads of an --only run


def log(*parts):
    print("[bench]", *parts, file=sys.stderr, flush=True)


def sh(cmd, check=True, capture=False, env=None):
    log("$", cmd if isinstance(cmd, str) else shlex.join(cmd))
    result = subprocess.run(cmd, shell=isinstance(cmd, str), check=check, text=True,
                            capture_output=capture, env=env)
    return result.stdout if capture else result


def bench(args, record=True):
    """Runs pollcast-bench with --json and returns its result object."""
    cmd = [str(BIN / "pollcast-bench"), "--json", *args]
    if record:
        COMMANDS.append(shlex.join(cmd).replace(token(), "$TOKEN"))
    out = subprocess.run(cmd, text=True, capture_output=True)
    if out.returncode not in (0, 3):
        log(out.stderr[-2000:])
        raise RuntimeError(f"pollcast-bench failed ({out.returncode})")
    return json.loads(out.stdout)


_TOKEN = None


def token():
    global _TOKEN
    if _TOKEN is None:
        _TOKEN = subprocess.run(
            [str(BIN / "pollcast"), "token", "--token-secret", SECRET, "--publish", "bench:*",
             "--subscribe", "bench:*", "--ttl", "6h"], text=True, capture_output=True, check=True).stdout.strip()
    return _TOKEN


# ------------------------------------------------------------------ setup --

def prepare():
    if not (Path("/usr/sbin/nginx").exists() and Path("/usr/share/nginx/modules-available/mod-nchan.conf").exists()):
        log("installing nginx with the Nchan module (Debian packages)")
        sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null")
    sh([str(ROOT / "scripts" / "ensure-postgres.sh")])
    sh(["cargo", "build", "--release", "--workspace", "--bins"])  # pollcast and pollcast-bench
    WORK.mkdir(parents=True, exist_ok=True)


def psql(sql, db="postgres"):
    return sh(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-Atqc", sql], capture=True)


def fresh_database():
    psql(f"DROP DATABASE IF EXISTS {PG_DB} WITH (FORCE)")
    psql(f"CREATE DATABASE {PG_DB}")


class Server:
    """A pollcast process."""

    def __init__(self, name, port, database_url=None, extra=()):
        self.name, self.port, self.database_url = name, port, database_url
        self.extra = list(extra)
        self.proc = None

    def start(self):
        env = dict(os.environ, POLLCAST_TOKEN_SECRET=SECRET, RUST_LOG="warn")
        cmd = [str(BIN / "pollcast"), "--listen", f"127.0.0.1:{self.port}", "--vote-rate", "1000000",
               "--publish-rate", "1000000", "--streams-per-token", "1000000", "--subscriber-buffer", "4096",
               # Every load generator connection comes from 127.0.0.1.
               "--max-connections-per-address", "10000000", "--streams-per-address", "10000000"]
        if self.database_url:
            cmd += ["--database-url", self.database_url]
        cmd += self.extra
        log("starting", self.name, shlex.join(cmd))
        self.log = open(WORK / f"{self.name}.log", "w")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=self.log)
        wait_http(f"http://127.0.0.1:{self.port}/readyz")
        return self

    def pids(self):
        return [self.proc.pid]

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
            self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    @property
    def base(self):
        return f"http://127.0.0.1:{self.port}"

    def sub_url(self, topic):
        return f"{self.base}/v1/events?topic={topic}&access_token={token()}"

    def pub_url(self, topic):
        return f"{self.base}/v1/topics/{topic}/events"

    def pub_args(self):
        return ["--publish-style", "pollcast", "--publish-token", token()]


class Nchan:
    """nginx with the Nchan module: the peer pollcast is compared with."""

    def __init__(self, workers):
        self.workers = workers
        self.proc = None

    def start(self):
        prefix = WORK / "nginx"
        (prefix / "logs").mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(f"""
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes {self.workers};
worker_rlimit_nofile 20000;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
daemon off;
events {{ worker_connections 19000; }}
http {{
    access_log off;
    nchan_max_reserved_memory 512M;
    server {{
        listen 127.0.0.1:{PORTS['nchan']} backlog=4096;
        location ~ ^/pub/(\\w+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
            nchan_message_buffer_length 200000;
            nchan_message_timeout 1h;
        }}
        location ~ ^/sub/(\\w+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
            nchan_subscriber_first_message newest;
        }}
    }}
}}
""")
        log("starting nginx/Nchan with", self.workers, "workers")
        self.proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        return self

    def pids(self):
        out = subprocess.run(["pgrep", "-f", "nginx: (master|worker)"], text=True, capture_output=True).stdout
        return [int(p) for p in out.split()]

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
            time.sleep(0.5)

    @property
    def base(self):
        return f"http://127.0.0.1:{PORTS['nchan']}"

    def sub_url(self, topic):
        return f"{self.base}/sub/{topic.replace(':', '_').replace('-', '_')}"

    def pub_url(self, topic):
        return f"{self.base}/pub/{topic.replace(':', '_').replace('-', '_')}"

    def pub_args(self):
        return ["--publish-style", "nchan"]


def wait_http(url, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def pid_args(server):
    args = []
    for pid in server.pids():
        args += ["--server-pid", str(pid)]
    return args


# -------------------------------------------------------------- workloads --

RUN = 0


def topic(prefix):
    global RUN
    RUN += 1
    return f"bench:{prefix}-{int(time.time())}-{RUN}"


def fanout(server, subscribers, rate, duration, warmup="3s"):
    t = topic("fanout")
    return bench(["fanout", "--subscribers", str(subscribers), "--rate", str(rate), "--duration", duration,
                  "--warmup", warmup, "--drain", "3s", "--connect-concurrency", "256",
                  *pid_args(server), "--subscribe-url", server.sub_url(t), "--publish-url", server.pub_url(t),
                  *server.pub_args()])


def summary_fanout(r):
    return {
        "delivered_percent": r["deliveries"]["delivered_percent"],
        "deliveries_per_second": r["throughput"]["deliveries_per_second"],
        "p50_ms": r["latency"]["p50_ms"], "p90_ms": r["latency"]["p90_ms"],
        "p99_ms": r["latency"]["p99_ms"], "p999_ms": r["latency"]["p999_ms"], "max_ms": r["latency"]["max_ms"],
        "duplicates": r["deliveries"]["duplicates"], "subscribers": r["subscribers"]["connected"],
    }


def max_fanout(server, subscribers, rates, duration):
    """Raises the rate until delivery < 100 % or p99 > 100 ms."""
    best = None
    steps = []
    for rate in rates:
        s = summary_fanout(fanout(server, subscribers, rate, duration, warmup="2s"))
        s["rate"] = rate
        steps.append(s)
        if s["delivered_percent"] < 100.0 or s["p99_ms"] > 100.0:
            break
        best = s
    return {"best": best, "steps": steps}


def idle(server, subscribers):
    t = topic("idle")
    r = bench(["idle", "--subscribers", str(subscribers), "--wait", "5s", "--connect-concurrency", "256",
               *pid_args(server), "--subscribe-url", server.sub_url(t)])
    return {"connected": r["subscribers"]["connected"], **r["server_rss_kib"]}


def ingest(server, participants):
    r = bench(["ingest", "--url", server.base, "--participants", str(participants), "--concurrency", "64"])
    return {"votes_per_second": r["votes"]["votes_per_second"], "accepted": r["votes"]["accepted_201"],
            "statuses": r["votes"]["statuses"], "p50_ms": r["latency"]["p50_ms"], "p99_ms": r["latency"]["p99_ms"],
            "machine_cpu": r.get("machine_cpu"), "joins_per_second": r["participants"]["joins_per_second"]}


def machine_cpu():
    """(busy, idle, cores) of the whole machine from /proc/stat, in ticks."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    v = [int(x) for x in lines[0].split()[1:]]
    cores = sum(1 for line in lines[1:] if line.startswith("cpu"))
    return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], v[3] + v[4], max(cores, 1)


def busy_core_seconds(before, after, seconds):
    busy, idle = after[0] - before[0], after[1] - before[1]
    share = busy / (busy + idle) if busy + idle else 0.0
    return share * after[2] * seconds, share


def pgbench_inserts(seconds):
    """Single-row INSERT transactions into a table shaped like `events`."""
    db = "pollcast_pgbench"
    script = events_like_table(db)
    cmd = ["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-c", "16", "-j", "2", "-T", str(seconds),
           "-f", str(script), db]
    COMMANDS.append(shlex.join(cmd))
    before, started = machine_cpu(), time.monotonic()
    out = sh(cmd, capture=True)
    core_seconds, share = busy_core_seconds(before, machine_cpu(), time.monotonic() - started)
    tps = next(float(line.split("=")[1].split()[0]) for line in out.splitlines() if line.startswith("tps ="))
    done = next(int(line.split(":")[1].split("/")[0]) for line in out.splitlines() if "transactions actually processed" in line)
    psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    return {"tps": tps, "machine_cpu": {"busy_share": share, "us_per_tx": core_seconds * 1e6 / max(done, 1)}}


def events_like_table(db):
    """A fresh database `db` holding `bench_events`, shaped like `events`;
    returns the pgbench script that inserts one row."""
    psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql(f"CREATE DATABASE {db}")
    psql("CREATE TABLE bench_events (id bigserial PRIMARY KEY, topic text NOT NULL, type text NOT NULL, "
         "trace_id text NOT NULL, payload json NOT NULL, created_at timestamptz NOT NULL DEFAULT now())", db=db)
    script = WORK / "insert.sql"
    script.write_text("INSERT INTO bench_events (topic, type, trace_id, payload) VALUES "
                      "('bench:x', 'vote:accepted', '4bf92f3577b34da6a3ce929d0e0e4736', "
                      "'{\"voteId\":\"v\",\"pollId\":\"p\",\"currentVoteCount\":1}');\n")
    return script


def commit_latency(seconds):
    """How long one durable single-row INSERT transaction takes on this
    Postgres with one client (pgbench's per-transaction log): the floor
    under pollcast's publish-to-delivery latency on Postgres, which commits
    before it delivers."""
    db = "pollcast_pglat"
    script = events_like_table(db)
    prefix = WORK / "pglat"
    for old in WORK.glob("pglat*"):
        old.unlink()
    cmd = ["pgbench", "-h", "127.0.0.1", "-U", "postgres", "-n", "-c", "1", "-T", str(seconds),
           "--log", f"--log-prefix={prefix}", "-f", str(script), db]
    COMMANDS.append(shlex.join(cmd))
    sh(cmd, capture=True)
    micros = sorted(int(line.split()[2]) for f in WORK.glob("pglat*") for line in f.read_text().splitlines())
    psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    pick = lambda q: micros[min(len(micros) - 1, int(q * len(micros)))] / 1000
    return {"transactions": len(micros), "p50_ms": pick(0.50), "p99_ms": pick(0.99), "p999_ms": pick(0.999)}


def replay(server, backlog):
    """Publishes the backlog, lets the server settle, then measures the
    replay alone, as the COPY it is compared with reads rows at rest."""
    t = topic("replay")
    publish = [str(BIN / "pollcast-bench"), "replay", "--print-first-id", "--backlog", str(backlog),
               "--concurrency", "64", "--subscribe-url", server.sub_url(t), "--publish-url", server.pub_url(t),
               *server.pub_args()]
    COMMANDS.append(shlex.join(publish).replace(token(), "$TOKEN"))
    first = int(subprocess.run(publish, text=True, capture_output=True, check=True).stdout.strip())
    time.sleep(5)
    # The first read of freshly written rows sets their hint bits (it writes
    # the pages again); both contenders read the rows after that, at rest.
    copy_rate(first, first + backlog - 1, t, runs=1, record=False)
    r = bench(["replay", "--first-id", str(first), "--backlog", str(backlog), "--subscribe-url", server.sub_url(t)])
    return {"events_per_second": r["replay"]["events_per_second"],
            "time_to_live_s": r["replay"]["time_to_live_seconds"],
            "received": r["replay"]["received"], "outcome": r["replay"]["outcome"], "topic": t,
            "first_id": first, "last_id": first + backlog - 1}


def copy_rate(first_id, last_id, topic_name, runs=3, record=True):
    """The same rows straight out of Postgres with COPY, as the reference."""
    sql = (f"COPY (SELECT id, topic, type, trace_id, payload, created_at FROM events "
           f"WHERE id > {first_id - 1} AND id <= {last_id} AND topic = '{topic_name}' ORDER BY id) TO STDOUT")
    cmd = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", PG_DB, "-c", sql]
    if record:
        COMMANDS.append(shlex.join(cmd) + " > /dev/null")
    best = None
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return {"seconds": best, "events_per_second": (last_id - first_id + 1) / best}


def storm(server, subscribers, rate):
    t = topic("storm")
    r = bench(["storm", "--subscribers", str(subscribers), "--rate", str(rate), "--duration", "15s",
               "--after", "5s", "--warmup", "3s", "--connect-concurrency", "256", "--reconnect-concurrency",
               str(subscribers), *pid_args(server), "--subscribe-url", server.sub_url(t),
               "--publish-url", server.pub_url(t), *server.pub_args()])
    return {"time_to_all_live_ms": r["storm"]["time_to_all_live_ms"],
            "reconnected": r["storm"]["reconnected"], "never_live": r["storm"]["never_live"],
            "missing": r["deliveries"]["missing"], "duplicates": r["deliveries"]["duplicates"],
            "exactly_once": r.get("exactly_once"), "delivered_percent": r["deliveries"]["delivered_percent"]}


# ----------------------------------------------------------------- report --

def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next((l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal")), "?")
    pg = sh(["psql", "--version"], capture=True).strip()
    nginx = subprocess.run(["nginx", "-v"], text=True, capture_output=True).stderr.strip()
    rustc = sh(["rustc", "--version"], capture=True).strip()
    return (f"{os.cpu_count()} CPUs ({cpu}), {mem} RAM, Linux {platform.release()}; {pg} (server on the same "
            f"machine, default settings); {nginx} with libnginx-mod-nchan; {rustc}; release build.")


def ratio(a, b):
    return f"{a / b:.2f}×" if b else "n/a"


def write_report(results, quick):
    r = results
    lines = ["# Benchmarks", ""]
    partial = f" (this invocation ran only: {', '.join(sorted(PARTIAL))}; the rest is from the last full run)" if PARTIAL else ""
    lines += [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench` "
              f"(`bench/suite.py`{' --quick' if quick else ''}){partial}, on one machine: {machine()}", "",
              "Every comparison below ran side by side in the same invocation, on the same 2 cores the load "
              "generator also uses, so the ratios are the numbers to read; absolute values move from run to run "
              "on this shared machine. pollcast runs on Postgres unless marked *memory*. Nchan runs on nginx "
              "with 2 workers (1 for idle memory, as in the issue).", ""]

    def fan_rows(name, key):
        rows = []
        for server in ("pollcast", "pollcast (memory)", "nchan"):
            s = r.get(key, {}).get(server)
            if s:
                rows.append(f"| {name} | {server} | {s['subscribers']} | {s['delivered_percent']:.3f} % | "
                            f"{s['deliveries_per_second']:,.0f} | {s['p50_ms']:.1f} | {s['p90_ms']:.1f} | "
                            f"{s['p99_ms']:.1f} | {s['p999_ms']:.1f} | {s['max_ms']:.1f} |")
        return rows

    lines += ["## Fan-out", "",
              "| workload | server | subscribers | delivered | deliveries/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    lines += fan_rows("F1: 10 ev/s × 20 s", "f1") + fan_rows("F2: 1,000 ev/s × 20 s", "f2")
    lines.append("")
    cl = r.get("commit_latency")
    if cl:
        lines += [f"For scale: one durable single-row INSERT transaction on this Postgres (pgbench, 1 client, "
                  f"{cl['transactions']:,} transactions) takes p50 {cl['p50_ms']:.2f} ms, p99 {cl['p99_ms']:.2f} ms, "
                  f"p99.9 {cl['p999_ms']:.2f} ms. pollcast on Postgres commits every event before any subscriber "
                  f"sees it; Nchan and pollcast's memory store keep events in memory only.", ""]
    targets = []
    for key, label in (("f1", "F1"), ("f2", "F2")):
        p, n = r.get(key, {}).get("pollcast"), r.get(key, {}).get("nchan")
        if p and n:
            targets.append(f"| {label} p99 latency, pollcast ÷ Nchan | {ratio(p['p99_ms'], n['p99_ms'])} | ≤ 0.5× |")
    mf = r.get("max_fanout", {})
    if mf:
        lines += ["### Maximum sustained fan-out (1,000 subscribers, rate raised until delivery < 100 % or p99 > 100 ms)", "",
                  "| server | highest passing rate (ev/s) | deliveries/s | p99 ms at that rate |", "|---|---|---|---|"]
        for server in ("pollcast", "nchan"):
            b = mf.get(server, {}).get("best")
            lines.append(f"| {server} | {b['rate']} | {b['deliveries_per_second']:,.0f} | {b['p99_ms']:.1f} |" if b
                         else f"| {server} | none passed | – | – |")
        lines.append("")
        for server in ("pollcast", "nchan"):
            steps = ", ".join(f"{s['rate']}/s → {s['delivered_percent']:.2f} % delivered, p99 {s['p99_ms']:.0f} ms"
                              for s in mf.get(server, {}).get("steps", []))
            lines.append(f"- {server} steps: {steps}")
        lines.append("")
        pb, nb = mf.get("pollcast", {}).get("best"), mf.get("nchan", {}).get("best")
        if pb and nb:
            targets.append(f"| max sustained deliveries/s, pollcast ÷ Nchan | "
                           f"{ratio(pb['deliveries_per_second'], nb['deliveries_per_second'])} | ≥ 1.5× |")
    idle_r = r.get("idle", {})
    if idle_r:
        lines += ["## Idle memory", "", "| server | subscribers | RSS before KiB | RSS after KiB | KiB per subscriber |",
                  "|---|---|---|---|---|"]
        for server, s in idle_r.items():
            lines.append(f"| {server} | {s['connected']} | {s['before']:,} | {s['after_subscribe']:,} | "
                         f"{s['per_subscriber']:.2f} |")
        lines.append("")
        if "pollcast" in idle_r and "nchan (1 worker)" in idle_r:
            targets.append(f"| idle KiB per subscriber, pollcast ÷ Nchan | "
                           f"{ratio(idle_r['pollcast']['per_subscriber'], idle_r['nchan (1 worker)']['per_subscriber'])} | ≤ 0.5× |")
    ing = r.get("ingest")
    if ing:
        lines += ["## Vote ingest", "",
                  "| measure | value |", "|---|---|",
                  f"| pollcast votes/s (64 clients, one open poll, {ing['participants']:,} participants, HTTP → commit → 201) | "
                  f"{ing['pollcast']['votes_per_second']:,.0f} (p50 {ing['pollcast']['p50_ms']:.1f} ms, p99 {ing['pollcast']['p99_ms']:.1f} ms; statuses {ing['pollcast']['statuses']}) |",
                  f"| pgbench single-row INSERT transactions/s into a table like `events` (16 clients) | {ing['pgbench']['tps']:,.0f} |"]
        vote_cpu, tx_cpu = ing["pollcast"].get("machine_cpu"), ing["pgbench"].get("machine_cpu")
        if vote_cpu and tx_cpu:
            # Every process on the machine counts: the server, Postgres, the
            # client (pollcast-bench or pgbench) and the kernel share 2 cores.
            lines.append(f"| the machine's CPU per vote / per pgbench transaction (all processes, `/proc/stat`) | "
                         f"{vote_cpu['us_per_vote']:.0f} µs ({vote_cpu['busy_share'] * 100:.0f} % busy) / "
                         f"{tx_cpu['us_per_tx']:.0f} µs ({tx_cpu['busy_share'] * 100:.0f} % busy) |")
        if ing["pollcast"].get("joins_per_second"):
            # The setup: every participant joins first (64 at a time), not timed with the votes.
            lines.append(f"| pollcast joins/s while the {ing['participants']:,} participants join (64 at a time, before the votes) | "
                         f"{ing['pollcast']['joins_per_second']:,.0f} |")
        lines.append("")
        targets.append(f"| vote ingest ÷ pgbench single-insert tx/s | "
                       f"{ratio(ing['pollcast']['votes_per_second'], ing['pgbench']['tps'])} | ≥ 2× |")
    rep = r.get("replay")
    if rep:
        lines += ["## Replay", "", "| measure | events/s | seconds |", "|---|---|---|",
                  f"| pollcast: a client {rep['pollcast']['received']:,} events behind, until live | "
                  f"{rep['pollcast']['events_per_second']:,.0f} | {rep['pollcast']['time_to_live_s']:.3f} |",
                  f"| psql COPY of the same rows to stdout (best of 3) | {rep['copy']['events_per_second']:,.0f} | "
                  f"{rep['copy']['seconds']:.3f} |", ""]
        targets.append(f"| replay ÷ raw COPY rate | "
                       f"{ratio(rep['pollcast']['events_per_second'], rep['copy']['events_per_second'])} | ≥ 0.5× |")
    st = r.get("storm")
    if st:
        lines += ["## Reconnect storm", "",
                  "| server | subscribers | time until all live | missing | duplicates | exactly once |", "|---|---|---|---|---|---|"]
        for server, s in st.items():
            lines.append(f"| {server} | {s['reconnected']:,} | {s['time_to_all_live_ms']:.0f} ms | {s['missing']} | "
                         f"{s['duplicates']} | {s['exactly_once']} |")
        lines.append("")
        if "pollcast" in st:
            targets.append(f"| reconnect storm: time until all {st['pollcast']['reconnected']:,} are live | "
                           f"{st['pollcast']['time_to_all_live_ms'] / 1000:.2f} s, {st['pollcast']['missing']} lost | ≤ 5 s, nothing lost |")
    lines += ["## Targets", "", "| target | measured | wanted |", "|---|---|---|", *targets, ""]
    notes = ROOT / "bench" / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().strip(), ""]
    lines += ["## Commands", "", "The suite ran these (`$TOKEN`: a token from `pollcast token --token-secret "
              f"{SECRET} --publish 'bench:*' --subscribe 'bench:*'`; pollcast started as "
              "`pollcast --listen 127.0.0.1:18180 --vote-rate 1000000 --subscriber-buffer 4096 --database-url "
              f"{PG_URL}`, and on the memory store on port 18181):", "", "```sh", *COMMANDS, "```", ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(lines))
    (WORK / "results.json").write_text(json.dumps({**results, "commands": COMMANDS}, indent=2))
    log("wrote BENCHMARKS.md")


# ------------------------------------------------------------------- main --

def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="")
    opts = parser.parse_args()
    only = set(filter(None, opts.only.split(",")))
    PARTIAL.update(only)
    want = lambda name: not only or name in only
    q = opts.quick
    prepare()
    fresh_database()
    pg = Server("pollcast", PORTS["pg"], PG_URL).start()
    mem = Server("pollcast-memory", PORTS["mem"]).start()
    nchan = Nchan(2).start()
    results = {}
    if only and (WORK / "results.json").exists():
        # A partial run updates the last full run's report, workload by
        # workload; each comparison still ran within one invocation.
        previous = json.loads((WORK / "results.json").read_text())
        COMMANDS.extend(previous.pop("commands", []))
        results.update({k: v for k, v in previous.items() if k not in only})
    try:
        f1_subs, dur = (1000, "5s") if q else (10000, "20s")
        if want("f1"):
            results["f1"] = {name: summary_fanout(fanout(s, f1_subs, 10, dur))
                             for name, s in (("pollcast", pg), ("nchan", nchan), ("pollcast (memory)", mem))}
        if want("f2"):
            results["f2"] = {name: summary_fanout(fanout(s, 100, 1000, dur))
                             for name, s in (("pollcast", pg), ("nchan", nchan), ("pollcast (memory)", mem))}
            results["commit_latency"] = commit_latency(5 if q else 10)
        if want("max"):
            rates = [50, 100, 200, 400] if q else [50, 100, 150, 200, 300, 400, 600]
            results["max_fanout"] = {name: max_fanout(s, 1000, rates, "5s" if q else "10s")
                                     for name, s in (("pollcast", pg), ("nchan", nchan))}
        if want("idle"):
            n = 2000 if q else 10000
            results["idle"] = {}
            pg.restart()
            results["idle"]["pollcast"] = idle(pg, n)
            mem.restart()
            results["idle"]["pollcast (memory)"] = idle(mem, n)
            # The same server with every stream served through hyper: what
            # the direct SSE path saves, measured in the same run.
            through_hyper = Server("pollcast-hyper", PORTS["hyper"], PG_URL, ["--direct-streams", "false"]).start()
            results["idle"]["pollcast (through hyper)"] = idle(through_hyper, n)
            through_hyper.stop()
            nchan.stop()
            one = Nchan(1).start()
            results["idle"]["nchan (1 worker)"] = idle(one, n)
            one.stop()
            nchan = Nchan(2).start()
            pg.restart()
        if want("ingest"):
            participants = 5000 if q else 50000
            results["ingest"] = {"participants": participants, "pollcast": ingest(pg, participants),
                                 "pgbench": pgbench_inserts(5 if q else 20)}
        if want("replay"):
            backlog = 10000 if q else 100000
            rp = replay(pg, backlog)
            results["replay"] = {"pollcast": rp, "copy": copy_rate(rp["first_id"], rp["last_id"], rp["topic"])}
            results["replay"]["backlog"] = backlog
        if want("storm"):
            n = 1000 if q else 5000
            results["storm"] = {"pollcast": storm(pg, n, 50)}
    finally:
        for s in (pg, mem, nchan):
            s.stop()
    write_report(results, q)


if __name__ == "__main__":
    main()
