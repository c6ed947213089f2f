#!/usr/bin/env python3
"""Before/after in one sitting: two pollcast builds under the same load.

Runs the F1, F2, ingest and idle workloads of bench/suite.py against two
server binaries, alternating which goes first each round (ABBA), with one
load generator (the `after` build's pollcast-bench) for both, each server
on its own fresh Postgres database. Prints each run and, per workload, the
median of each build and their ratio (after / before). On a machine with
two noisy cores the ratio is the number to read, not the absolute values.

Usage:
  bench/ab.py --before /path/to/old/target/release --after target/release \
              [--rounds 3] [--only f1,f2,ingest,idle]

Build the old one in a worktree first, e.g.
  git worktree add --detach /tmp/before <commit>
  (cd /tmp/before && cargo build --release --bins)
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402  (the workloads and the server wrapper)

WORKLOADS = ("f1", "f2", "ingest", "idle")


class Build(suite.Server):
    """A pollcast server from a given directory of binaries."""

    def __init__(self, name, binaries, port, database):
        super().__init__(name, port, f"postgres://postgres@127.0.0.1:5432/{database}")
        self.binaries = Path(binaries)
        self.database = database

    def start(self):
        # suite.Server starts BIN/pollcast: point it at this build meanwhile.
        load_generator = suite.BIN
        suite.BIN = self.binaries
        try:
            return super().start()
        finally:
            suite.BIN = load_generator


def fresh(database):
    suite.psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    suite.psql(f"CREATE DATABASE {database}")


def run(workload, server):
    """One run of a workload; returns the numbers compared."""
    if workload == "f1":
        r = suite.summary_fanout(suite.fanout(server, 10000, 10, "20s"))
        return {"p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "delivered_percent": r["delivered_percent"]}
    if workload == "f2":
        r = suite.summary_fanout(suite.fanout(server, 100, 1000, "20s"))
        return {"p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"], "delivered_percent": r["delivered_percent"]}
    if workload == "ingest":
        r = suite.ingest(server, 50000)
        return {"votes_per_second": r["votes_per_second"], "p99_ms": r["p99_ms"]}
    if workload == "idle":
        server.restart()
        r = suite.idle(server, 10000)
        return {k: v for k, v in r.items() if isinstance(v, (int, float))}
    raise ValueError(workload)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True)
    parser.add_argument("--after", required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default=",".join(WORKLOADS))
    opts = parser.parse_args()
    suite.BIN = Path(opts.after).resolve()
    suite.WORK.mkdir(parents=True, exist_ok=True)
    suite.sh([str(suite.ROOT / "scripts" / "ensure-postgres.sh")], capture=True)
    fresh("pollcast_ab_before")
    fresh("pollcast_ab_after")
    builds = {
        "before": Build("before", Path(opts.before).resolve(), 18183, "pollcast_ab_before").start(),
        "after": Build("after", Path(opts.after).resolve(), 18184, "pollcast_ab_after").start(),
    }
    runs = {w: {"before": [], "after": []} for w in opts.only.split(",")}
    try:
        for round_ in range(opts.rounds):
            order = ("before", "after") if round_ % 2 == 0 else ("after", "before")
            for workload in runs:
                for name in order:
                    result = run(workload, builds[name])
                    runs[workload][name].append(result)
                    suite.log(f"round {round_ + 1} {workload} {name}: {json.dumps(result)}")
    finally:
        for server in builds.values():
            server.stop()
    summary = {}
    for workload, by_build in runs.items():
        summary[workload] = {}
        for key in by_build["before"][0]:
            values = {name: [r[key] for r in by_build[name] if r.get(key) is not None] for name in by_build}
            if not values["before"] or not values["after"]:
                continue
            before, after = statistics.median(values["before"]), statistics.median(values["after"])
            summary[workload][key] = {"before": before, "after": after,
                                      "ratio": round(after / before, 3) if before else None,
                                      "runs": values}
    print(json.dumps({"summary": summary, "commands": suite.COMMANDS}, indent=1))


if __name__ == "__main__":
    main()
