#!/usr/bin/env python3
"""Publish rate from SQL beside REST, and how soon a SQL publish streams (#19).

One release server on a fresh Postgres database, then, in one sitting:

1. SQL: `pgbench -c 8 -j 2 -T SECONDS` of transactions that each call
   `pollcast.publish(...)` once (the application's side: how many publishing
   transactions per second commit), then how long the drain takes to move
   what is left in the outbox into the log after pgbench stops; beside it,
   the same transactions inserting into a plain table (what a commit costs
   on this machine), and that with a NOTIFY in the transaction (why
   pollcast.publish sends none).
2. REST: `wrk -c 8 -t 2 -d SECONDS` POSTing the same event to
   `/v1/topics/bench:rest/events` (201s per second).
3. Latency: pgbench at a fixed rate (`-R`) publishing `{"sentAt": <commit-side
   clock>}` while one SSE reader (this script) notes when each event arrives:
   p50/p99/max from the publishing statement to the stream.

Usage: bench/sql_publish.py [--seconds 10] [--rate 200]
Needs: target/release/pollcast (cargo build --release), pgbench, wrk
(`apt-get install wrk`).
"""

import argparse
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "pollcast"
SECRET = "bench-secret"
DB = "pollcast_sqlbench"
PG = ["-h", "127.0.0.1", "-U", "postgres"]


def log(*parts):
    print("[sql-bench]", *parts, file=sys.stderr, flush=True)


def sh(cmd, capture=True):
    log("$", shlex.join(cmd))
    return subprocess.run(cmd, check=True, text=True, capture_output=capture).stdout


def psql(sql, db=DB):
    return sh(["psql", *PG, "-d", db, "-Atqc", sql]).strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pgbench(script, seconds, extra=()):
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    out = sh(["pgbench", *PG, "-n", "-c", "8", "-j", "2", "-T", str(seconds), *extra, "-f", f.name, DB])
    os.unlink(f.name)
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))
    done = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
    return tps, done


def count(topic):
    return int(psql(f"SELECT count(*) FROM events WHERE topic = '{topic}'"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rate", type=int, default=200)
    args = parser.parse_args()

    psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")
    psql(f"CREATE DATABASE {DB}", db="postgres")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, POLLCAST_TOKEN_SECRET=SECRET, RUST_LOG="warn")
    server = subprocess.Popen(
        [str(BIN), "--listen", f"127.0.0.1:{port}", "--database-url",
         f"postgres://postgres@127.0.0.1:5432/{DB}", "--publish-rate", "1000000",
         "--status-interval", "1h"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1)
                break
            except Exception:
                time.sleep(0.2)
        token = sh([str(BIN), "token", "--token-secret", SECRET, "--publish", "bench:*",
                    "--subscribe", "bench:*", "--ttl", "1h"]).strip()
        results = {}

        # 1. SQL publishing transactions per second, and the drain behind them.
        tps, done = pgbench(
            "SELECT pollcast.publish('bench:sql', 'bench:tick', '{\"n\": 1}');\n", args.seconds)
        stopped = time.time()
        while count("bench:sql") < done:
            time.sleep(0.01)

        results["sql_drain_after_stop_ms"] = round((time.time() - stopped) * 1000)
        results["sql_events"] = done
        results["sql_tps"] = round(tps)
        # The same transactions without pollcast: one row into a plain
        # table like the outbox (what a commit costs here), and the same
        # with a NOTIFY (what Postgres' commit-time NOTIFY lock costs).
        psql("CREATE TABLE plain_outbox (seq bigserial PRIMARY KEY, topic text, type text, payload jsonb)")
        plain, _ = pgbench("INSERT INTO plain_outbox (topic, type, payload) "
                           "VALUES ('bench:sql', 'bench:tick', '{\"n\": 1}');\n", args.seconds)
        notified, _ = pgbench("BEGIN;\nINSERT INTO plain_outbox (topic, type, payload) "
                              "VALUES ('bench:sql', 'bench:tick', '{\"n\": 1}');\n"
                              "SELECT pg_notify('bench_channel', '');\nCOMMIT;\n", args.seconds)
        results["plain_insert_tps"] = round(plain)
        results["plain_insert_with_notify_tps"] = round(notified)

        # 2. REST publishes per second.
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write('wrk.method = "POST"\n'
                    'wrk.body = \'{"type": "bench:tick", "payload": {"n": 1}}\'\n'
                    f'wrk.headers["Authorization"] = "Bearer {token}"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
        out = sh(["wrk", "-c", "8", "-t", "2", "-d", f"{args.seconds}s", "-s", f.name,
                  base + "/v1/topics/bench:rest/events"])
        os.unlink(f.name)
        requests = int(re.search(r"(\d+) requests in", out).group(1))
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        results["rest_rps"] = round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))
        results["rest_non_2xx"] = int(non2xx.group(1)) if non2xx else 0
        results["rest_events"] = requests

        # 3. Latency from the publishing statement to the stream.
        latencies = []
        ready = threading.Event()

        def read():
            request = urllib.request.Request(base + "/v1/events?topic=bench:lat",
                                             headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=args.seconds + 30) as stream:
                ready.set()
                for line in stream:
                    if line.startswith(b"data: ") and b"sentAt" in line:
                        arrived = time.time()
                        sent = json.loads(line[6:])["payload"]["sentAt"]
                        latencies.append(arrived - sent)
                        if len(latencies) >= expected[0]:
                            return

        expected = [10**9]
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        ready.wait(10)
        _, sent = pgbench(
            "SELECT pollcast.publish('bench:lat', 'bench:tick', "
            "json_build_object('sentAt', extract(epoch from clock_timestamp()))::jsonb);\n",
            args.seconds, extra=["-R", str(args.rate)])
        expected[0] = sent
        reader.join(15)
        latencies.sort()
        pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)
        results["latency_events"] = f"{len(latencies)}/{sent}"
        results["latency_ms"] = {"p50": pick(0.5), "p99": pick(0.99), "max": round(latencies[-1] * 1000, 1)}
        print(json.dumps(results, indent=2))
    finally:
        server.terminate()
        server.wait(10)
        psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", db="postgres")


if __name__ == "__main__":
    main()
