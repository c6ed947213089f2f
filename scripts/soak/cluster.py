"""The cluster under test (a fresh Postgres database and three nodes), the
run's shared clocks and switches, and the resource sampler."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .client import NODES, Node, http
from .config import BIN, CFG, PG, ROOT, log


def psql(database: str, sql: str) -> list[list[str]]:
    out = subprocess.run(
        ["psql", "-h", PG["host"], "-p", PG["port"], "-U", PG["user"], "-d", database,
         "-XAtq", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True, capture_output=True, text=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


def pdeathsig():
    """In the child before exec: die with the harness, however it dies."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Cluster:
    def __init__(self):
        self.db = f"pollcast_soak_{secrets.token_hex(4)}"
        self.url = f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{self.db}"
        self.secret = secrets.token_hex(32)
        self.admin_key = secrets.token_hex(16)
        self.db_created = False

    def prepare(self):
        subprocess.run([str(ROOT / "scripts" / "ensure-postgres.sh")], check=True)
        if CFG.build:
            log("cargo build --release --bin pollcast (a no-op when it is up to date)")
            subprocess.run(["cargo", "build", "--release", "--bin", "pollcast"], cwd=ROOT, check=True)
        elif not BIN.exists():
            raise SystemExit(f"soak: {BIN} is missing and SOAK_BUILD=0")
        CFG.out.mkdir(parents=True, exist_ok=True)
        CFG.bin = CFG.out / "pollcast"
        shutil.copy2(BIN, CFG.bin)
        psql("postgres", f"CREATE DATABASE {self.db}")
        self.db_created = True
        log(f"database {self.db}")

    def start_nodes(self):
        CFG.out.mkdir(parents=True, exist_ok=True)
        for index in range(CFG.nodes):
            log_path = CFG.out / f"node-{index + 1}.log"
            env = dict(os.environ, NO_COLOR="1", RUST_LOG=os.environ.get("RUST_LOG", "info"))
            for name in [n for n in env if n.startswith("POLLCAST_") or n == "DATABASE_URL"]:
                del env[name]
            proc = subprocess.Popen(
                [str(CFG.bin), "--listen", "127.0.0.1:0", "--database-url", self.url,
                 "--token-secret", self.secret, "--admin-key", self.admin_key, *CFG.node_flags()],
                stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, env=env,
                preexec_fn=pdeathsig, start_new_session=True)
            NODES.append(Node(index, proc, 0, log_path))
        deadline = time.monotonic() + 60
        for node in NODES:
            while not node.port:
                if node.proc.poll() is not None:
                    raise SystemExit(f"soak: node {node.name} exited at start:\n{node.log_path.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"soak: node {node.name} did not start (log {node.log_path})")
                found = re.search(r"pollcast listening.*?127\.0\.0\.1:(\d+)", node.log_path.read_text(errors="replace"))
                if found:
                    node.port = int(found.group(1))
                else:
                    time.sleep(0.1)
            log(f"node {node.name}: pid {node.proc.pid}, 127.0.0.1:{node.port}")

    def stop_nodes(self) -> dict:
        """SIGTERM, then SIGKILL after 10 s; returns each node's exit status."""
        codes = {}
        for node in NODES:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in NODES:
            try:
                codes[node.name] = node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                codes[node.name] = f"killed after 10 s (exit {node.proc.wait()})"
        return codes

    def drop(self):
        if self.db_created and not CFG.keep_db:
            with contextlib.suppress(subprocess.CalledProcessError):
                psql("postgres", f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)")
                log(f"dropped database {self.db}")
        elif self.db_created:
            log(f"kept database {self.db} (SOAK_KEEP_DB=1)")

    def admin(self) -> dict:
        return {"X-Admin-Key": self.admin_key}


class Run:
    """Clocks and switches every client looks at."""

    def __init__(self, cluster: Cluster):
        self.cluster = cluster
        self.started = time.monotonic()
        self.load_stopped = asyncio.Event()     # producers and hostile clients stop
        self.readers_stop = asyncio.Event()     # consumers stop (after the drain)
        self.interrupted = False
        self.load_seconds = 0.0
        self.rng = random.Random(CFG.seed)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def node(self) -> Node:
        return self.rng.choice(NODES)

    async def sleep(self, seconds: float) -> bool:
        """Sleeps unless the load stops first; False when it stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.load_stopped.wait(), max(0.0, seconds))
        return not self.load_stopped.is_set()


def first_wait(every: float) -> float:
    """The first of a periodic event comes early in a short run."""
    return min(every, max(10, CFG.duration / 4))


# --- sampling ----------------------------------------------------------------

def proc_rss_kib(pid: int):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None


def proc_cpu_s(pid: int):
    """User plus system CPU seconds of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)
    except (OSError, IndexError, ValueError):
        return None


def proc_fds(pid: int):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def metric(text: bytes, name: str):
    """A gauge or unlabelled counter from /metrics; for a labelled one, the
    sum over its labels."""
    values = re.findall(rb"^" + re.escape(name.encode()) + rb"(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return int(sum(float(v) for v in values)) if values else None


class Sampler:
    """Every sample_every s: each node's RSS, fds, CPU, open streams and TCP
    connections (/metrics), the harness's own, and Postgres' connections."""

    def __init__(self, run: Run):
        self.run = run
        self.rows = []

    async def sample(self):
        row = {"elapsed_s": round(self.run.elapsed())}
        for node in NODES:
            row[f"{node.name}_rss_kib"] = proc_rss_kib(node.proc.pid)
            row[f"{node.name}_fds"] = proc_fds(node.proc.pid)
            row[f"{node.name}_cpu_s"] = proc_cpu_s(node.proc.pid)
            metrics = await http(node, "GET", "/metrics", timeout=5)
            body = metrics.body if metrics.status == 200 else b""
            row[f"{node.name}_streams"] = metric(body, "pollcast_connections")
            row[f"{node.name}_tcp"] = metric(body, "pollcast_tcp_connections")
            row[f"{node.name}_timed_out"] = metric(body, "pollcast_connections_timed_out_total")
        row["harness_rss_kib"] = proc_rss_kib(os.getpid())
        row["harness_fds"] = proc_fds(os.getpid())
        row["harness_cpu_s"] = proc_cpu_s(os.getpid())
        try:
            rows = await asyncio.to_thread(psql, "postgres",
                                           f"SELECT count(*) FILTER (WHERE datname = '{self.run.cluster.db}'), "
                                           f"count(*) FILTER (WHERE backend_type = 'client backend') FROM pg_stat_activity")
            row["pg_conns_db"], row["pg_conns_all"] = int(rows[0][0]), int(rows[0][1])
        except subprocess.CalledProcessError:
            row["pg_conns_db"] = row["pg_conns_all"] = None
        self.rows.append(row)

    async def run_forever(self):
        while True:
            await self.sample()
            if self.run.load_stopped.is_set():
                return
            await self.run.sleep(CFG.sample_every)
            if self.run.load_stopped.is_set():
                await self.sample()     # the end of the load
                return
