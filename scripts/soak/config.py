"""The soak's knobs (environment variables, see the package docstring) and
the server settings its load and its deadlines are sized against."""

from __future__ import annotations

import dataclasses
import os
import secrets
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "pollcast"
PG = dict(host="127.0.0.1", port="5432", user="postgres")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


@dataclasses.dataclass
class Config:
    duration: int = env_int("SOAK_DURATION", 3600)
    build: bool = os.environ.get("SOAK_BUILD", "1") != "0"
    hold: int = env_int("SOAK_HOLD", 300)
    sample_every: int = env_int("SOAK_SAMPLE", 10)
    report_every: int = env_int("SOAK_REPORT_EVERY", 0)
    out: Path = Path(os.environ.get("SOAK_OUT", str(ROOT / "target" / "soak")))
    keep_db: bool = os.environ.get("SOAK_KEEP_DB", "0") == "1"
    seed: int = env_int("SOAK_SEED", secrets.randbits(32))
    # How late past a deadline the server may act before it is a failure:
    # the nodes, Postgres and this harness share two cores.
    slack: float = env_float("SOAK_SLACK", 2.0)
    # Revocation: a stream ends within a second of the revocation (docs);
    # this much more is allowed for the harness's own scheduling.
    revoke_slack: float = env_float("SOAK_REVOKE_SLACK", 0.5)
    nodes: int = 3
    # The binary the nodes and `pollcast token` run: a copy of BIN made at
    # the start, so that a rebuild during the run changes nothing.
    bin: Path = BIN
    # Server settings the load and the checks are sized against; passed to
    # every node explicitly (they are the defaults but for --publish-rate).
    publish_rate: int = 40       # --publish-rate: the flood hits it, the rest stay well under
    heartbeat_s: int = 15        # --heartbeat
    head_timeout_s: int = 10     # --head-timeout
    idle_timeout_s: int = 75     # --idle-timeout
    body_timeout_s: int = 10     # --body-timeout
    # Legitimate load.
    publishers: int = 4          # on soak:t0..t3, each at publish_per_s
    publish_per_s: float = 3.0
    readers: int = 4             # SSE readers on soak:* / exact topics
    reconnect_s: tuple = (20, 90)
    presenters: int = 2          # polling sessions in parallel
    participants_per_session: int = 30
    poll_seconds: int = 30
    admin_every_s: tuple = (20, 60)   # the admin revokes a reader's token (or closes its stream)
    # Hostile load: connections held at once per kind, or one attempt per interval.
    held: dict = dataclasses.field(default_factory=lambda: {
        "slowloris": 9, "slowloris-drip": 3, "idle-keepalive": 9, "silent": 9,
        "stalled-body": 6, "stalled-reader": 3, "expiring-token": 1,
    })
    every: dict = dataclasses.field(default_factory=lambda: {
        "garbage": 2.0, "oversized-head": 10.0, "oversized-body": 10.0,
        "bad-token": 1.0, "nul": 3.0,
    })
    storm_every: int = 60
    storm_size: int = 10
    flood_every: int = 60
    flood_seconds: int = 5

    def __post_init__(self):
        # A held connection must outlive the longest deadline (idle) by a
        # margin, or the idle check could never see the server act.
        floor = self.idle_timeout_s + 3 * self.slack + 15
        self.hold = int(max(floor, min(self.hold, max(self.duration, floor))))
        if self.report_every <= 0:
            self.report_every = 300 if self.duration >= 1800 else max(10, self.duration // 6)

    def node_flags(self) -> list[str]:
        return ["--publish-rate", str(self.publish_rate), "--heartbeat", f"{self.heartbeat_s}s",
                "--head-timeout", f"{self.head_timeout_s}s", "--idle-timeout", f"{self.idle_timeout_s}s",
                "--body-timeout", f"{self.body_timeout_s}s"]


CFG = Config()


def log(message: str) -> None:
    print(f"soak [{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(values, q: float):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def selector_matches(selector: str, topic: str) -> bool:
    """pollcast's selector rule: same number of segments, `*` is any one."""
    s, t = selector.split(":"), topic.split(":")
    return len(s) == len(t) and all(a == "*" or a == b for a, b in zip(s, t))
