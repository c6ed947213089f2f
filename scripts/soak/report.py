"""target/soak/report.md and the raw CSVs beside it."""

from __future__ import annotations

import collections
import contextlib
import csv
import statistics
import subprocess
import time
from pathlib import Path

from .client import NODES
from .config import BIN, CFG, ROOT, percentile
from .hostile import HELD, HELD_KINDS
from .records import CHECK_WHAT, CHECKS, HOSTILE, LEGIT, OVERLOAD, TALLY
from .sessions import SESSION_WATCHERS


def fmt_ms(value):
    return "-" if value is None else f"{value:.1f}"


def write_csvs(sampler, health):
    with open(CFG.out / "samples.csv", "w", newline="") as f:
        if sampler.rows:
            writer = csv.DictWriter(f, fieldnames=list(sampler.rows[0]))
            writer.writeheader()
            writer.writerows(sampler.rows)
    with open(CFG.out / "healthz.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["elapsed_s", "node", "status", "ms"])
        writer.writerows(health.samples)
    with open(CFG.out / "requests.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "category", "status", "count"])
        for kind in sorted(TALLY.counts):
            for status, count in sorted(TALLY.counts[kind].items(), key=lambda x: str(x[0])):
                writer.writerow([kind, TALLY.category[kind], status, count])
    with open(CFG.out / "held.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["kind", "node", "opened_at_s", "seconds", "ended", "response", "first_byte_s",
                         "received_bytes", "server_send_queue_kib", "verdict", "detail"])
        for h in HELD:
            writer.writerow([h.kind, h.node, h.opened_at, h.seconds, h.ended, h.response, h.first_at, h.received,
                             h.queued_kib, h.verdict, h.detail])
    with open(CFG.out / "checks.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["check", "made", "failed", "first failures"])
        for name in CHECK_WHAT:
            writer.writerow([name, CHECKS.made[name], len(CHECKS.failures[name]),
                             " | ".join(CHECKS.failures[name][:20])])


def time_table(sampler, health) -> list[str]:
    rows = sampler.rows
    if not rows:
        return ["(no samples)"]
    picked, next_at = [], 0
    for row in rows:
        if row["elapsed_s"] >= next_at:
            picked.append(row)
            next_at = row["elapsed_s"] + CFG.report_every - CFG.sample_every / 2
    if picked[-1] is not rows[-1]:
        picked.append(rows[-1])
    names = [n.name for n in NODES]
    dash = lambda v: "-" if v is None else str(v)
    out = ["| t (s) | " + " | ".join(f"{n} RSS MiB" for n in names) + " | " + " | ".join(f"{n} fds" for n in names)
           + " | " + " | ".join(f"{n} streams / TCP" for n in names)
           + " | pg conns (db/all) | harness RSS MiB | healthz max ms (since previous row) |",
           "|" + "---|" * (3 * len(names) + 4)]
    previous = -1
    for row in picked:
        window = [s[3] for s in health.samples if previous < s[0] <= row["elapsed_s"] and s[3] is not None]
        previous = row["elapsed_s"]
        mib = lambda v: "-" if v is None else f"{v / 1024:.1f}"
        out.append(f"| {row['elapsed_s']} | " + " | ".join(mib(row[f'{n}_rss_kib']) for n in names) + " | "
                   + " | ".join(dash(row[f'{n}_fds']) for n in names) + " | "
                   + " | ".join(f"{dash(row[f'{n}_streams'])} / {dash(row[f'{n}_tcp'])}" for n in names)
                   + f" | {row['pg_conns_db']}/{row['pg_conns_all']} | {mib(row['harness_rss_kib'])} | "
                   + f"{fmt_ms(max(window) if window else None)} |")
    out += ["", "| node | RSS min MiB | RSS max MiB | RSS first → last | fds min | fds max | fds first → last "
                "| TCP connections max | closed for a deadline | CPU s used |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for n in names:
        rss = [r[f"{n}_rss_kib"] for r in rows if r[f"{n}_rss_kib"] is not None]
        fds = [r[f"{n}_fds"] for r in rows if r[f"{n}_fds"] is not None]
        tcp = [r[f"{n}_tcp"] for r in rows if r[f"{n}_tcp"] is not None]
        timed_out = [r[f"{n}_timed_out"] for r in rows if r[f"{n}_timed_out"] is not None]
        if rss and fds:
            cpu = [r[f"{n}_cpu_s"] for r in rows if r[f"{n}_cpu_s"] is not None]
            used = f"{cpu[-1] - cpu[0]:.1f}" if cpu else "-"
            out.append(f"| {n} | {min(rss) / 1024:.1f} | {max(rss) / 1024:.1f} | {rss[0] / 1024:.1f} → {rss[-1] / 1024:.1f} "
                       f"| {min(fds)} | {max(fds)} | {fds[0]} → {fds[-1]} | {max(tcp) if tcp else '-'} "
                       f"| {timed_out[-1] if timed_out else '-'} | {used} |")
    cpu = [r["harness_cpu_s"] for r in rows if r["harness_cpu_s"] is not None]
    if cpu:
        out.append(f"| harness | | | | | | | | | {cpu[-1] - cpu[0]:.1f} |")
    pg = [r["pg_conns_db"] for r in rows if r["pg_conns_db"] is not None]
    if pg:
        out.append(f"\nPostgres connections to the soak database: min {min(pg)}, max {max(pg)}.")
    return out


def seconds_span(values, digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return " / ".join(f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def held_table() -> list[str]:
    out = ["| kind | what it does | deadline (+ slack) | connections | closed by the server | time to close, s "
           "(min / median / max) | server's answer | still open at the cap "
           f"({CFG.hold} s) | open when the load stopped | other | judged: ok / FAIL |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for kind in [k for k in HELD_KINDS if any(h.kind == k for h in HELD)]:
        rows = [h for h in HELD if h.kind == kind]
        closed = [h for h in rows if h.closed_by_server()]
        answers = collections.Counter(h.response or "none" for h in rows if h.response or h.closed_by_server())
        other = collections.Counter(h.ended for h in rows if not h.closed_by_server()
                                    and h.ended not in ("held-to-cap", "open-at-stop"))
        ok = sum(h.verdict == "ok" for h in rows)
        failed = [h for h in rows if h.verdict == "FAIL"]
        deadline = HELD_KINDS[kind].deadline()
        if kind == "idle-keepalive":
            times = seconds_span(h.seconds - (h.first_at or 0) for h in closed)
            times += " after the answer"
        elif kind == "expiring-token":
            times = seconds_span(h.first_at for h in rows) + " from exp to connection:closing"
        else:
            times = seconds_span(h.seconds for h in closed)
        out.append(f"| {kind} | {HELD_KINDS[kind].what} | {deadline}{'' if deadline == '-' else f' (+{CFG.slack:g} s)'} "
                   f"| {len(rows)} | {len(closed)} | {times} | "
                   f"{', '.join(f'{a}×{n}' for a, n in answers.most_common()) or '-'} | "
                   f"{sum(h.ended == 'held-to-cap' for h in rows)} | {sum(h.ended == 'open-at-stop' for h in rows)} | "
                   f"{', '.join(f'{a}×{n}' for a, n in other.items()) or '-'} | "
                   f"{'-' if deadline == '-' else f'{ok} / {len(failed)}'} |")
        for h in failed[:3]:
            notes.append(f"{kind} FAIL on {h.node} at t={h.opened_at:.0f}s: {h.detail}")
        queued = [h.queued_kib for h in rows if h.queued_kib is not None]
        if queued:
            wmem = "?"
            with contextlib.suppress(OSError, IndexError, ValueError):
                wmem = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2]) // 1024
            notes.append(f"{kind}: the server's kernel held {min(queued)}-{max(queued)} KiB unsent for it "
                         f"when it ended. The server can only notice a reader that stopped once that socket "
                         f"buffer is full (up to tcp_wmem's {wmem} KiB here) and then its own queue "
                         f"(--subscriber-buffer frames); a stream it cut off stays in FIN-WAIT-1 behind the "
                         f"unsent bytes while the client still acknowledges.")
    return out + ([""] + [f"- {n}" for n in notes] if notes else [])


def checks_table() -> list[str]:
    out = ["| check | the promise | made | failed | measured s (min / median / max) |", "|---|---|---|---|---|"]
    for name, what in CHECK_WHAT.items():
        failed = len(CHECKS.failures[name])
        out.append(f"| {name} | {what} | {CHECKS.made[name]} | {failed}{' **FAIL**' if failed else ''} | "
                   f"{seconds_span(CHECKS.measured[name], 2)} |")
    out.append("\n*Measured*: for a deadline, when the server acted, counted from the deadline's start (the "
               "connect; the answer for idle-keepalive; exp for token-expiry); for revocation and admin-close, "
               "from the admin's request to the closing frame; for session-end, from session:ended to the "
               "stream's end. *unexpected-closing* counts the reader streams that ended without the frame.")
    for name, failures in CHECKS.failures.items():
        if failures:
            out.append(f"\n{name}, first failures:\n" + "\n".join(f"- {f}" for f in failures[:5]))
    return out


def status_table() -> tuple[list[str], list[str]]:
    out = ["| kind | category | outcomes |", "|---|---|---|"]
    for kind in sorted(TALLY.counts, key=lambda k: (TALLY.category[k], k)):
        counts = TALLY.counts[kind]
        out.append(f"| {kind} | {TALLY.category[kind]} | "
                   + ", ".join(f"{s}: {n}" for s, n in sorted(counts.items(), key=lambda x: -x[1])) + " |")
    lines = []
    groups = [("Finding: 5xx answering legitimate requests", lambda c, s: c == LEGIT),
              ("FAILURE: 5xx answering hostile input (bad input must get a 4xx)", lambda c, s: c == HOSTILE),
              ("Finding: 503 under deliberate overload (may be fair)", lambda c, s: c == OVERLOAD and s == 503),
              ("FAILURE: other 5xx under deliberate overload", lambda c, s: c == OVERLOAD and s != 503)]
    for title, pick in groups:
        chosen = TALLY.fivexx(pick)
        lines.append(f"**{title}:** " + ("none." if not chosen else ""))
        for kind, status, n in chosen:
            samples = TALLY.samples.get((kind, status), [])
            example = " ⏎ ".join(line for line in samples[0].replace("\r", "").split("\n") if line)[:200].replace("`", "'") \
                if samples else ""
            lines.append(f"- `{kind}` → {status} × {n}" + (f"; e.g. `{example}`" if example else ""))
        lines.append("")
    return out, lines


def git_describe() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "Cargo.toml", "sql"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return f"{head}{' with uncommitted changes in src/' if dirty else ''}"
    except OSError:
        return "?"


def write_report(run, sampler, health, storm, publishers, admin, results, logs, exit_codes,
                 drain_s, verdict_ok, problems, findings) -> Path:
    path = CFG.out / "report.md"
    ok_ms = [s[3] for s in health.samples if s[3] is not None and s[2] == 200]
    bad_health = [s for s in health.samples if s[2] != 200]
    status_lines, fivexx_lines = status_table()
    L = ["# pollcast soak report",
         "",
         f"**Verdict: {'PASS' if verdict_ok else 'FAIL'}**" + (" (interrupted)" if run.interrupted else ""),
         "",
         f"- {time.strftime('%Y-%m-%d %H:%M:%S')}; load ran {run.load_seconds:.0f} s of SOAK_DURATION={CFG.duration}; seed {CFG.seed}",
         f"- binary `{BIN.relative_to(ROOT)}` (built {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(CFG.bin.stat().st_mtime))}"
         f"{'' if CFG.build else ', SOAK_BUILD=0: not rebuilt'}; run from a copy, `{CFG.bin}`), git {git_describe()}",
         f"- {len(NODES)} nodes on database `{run.cluster.db}`:" + ",".join(
             f" {n.name} 127.0.0.1:{n.port}" for n in NODES) + f"; flags `{' '.join(CFG.node_flags())}` and "
         f"--admin-key, the rest default",
         f"- deadlines judged with {CFG.slack:g} s of slack (SOAK_SLACK), revocations with "
         f"{CFG.revoke_slack:g} s (SOAK_REVOKE_SLACK); hostile connections held at most {CFG.hold} s (SOAK_HOLD); "
         f"samples every {CFG.sample_every} s",
         ""]
    if problems:
        L += ["## Failures", ""] + [f"- {p}" for p in problems] + [""]
    if findings:
        L += ["## Findings (not failures)", ""] + [f"- {f}" for f in findings] + [""]
    L += ["## Checks of the hardening", "",
          "Each check is made many times during the run; one failure fails the run.", ""] + checks_table()
    L += ["", "## Hostile connections: what the server did", "",
          "*closed by the server* includes resets; *still open at the cap*: the client let go after "
          f"{CFG.hold} s and the server had not cut it off; *open when the load stopped*: still held at the end "
          "(judged only if already past its deadline).", ""]
    L += held_table()
    L += ["", "## Acknowledged versus stored", "",
          "An acknowledged write (201 with its id) must be in its table; a row nobody "
          "acknowledged is allowed only for requests whose outcome was unknown (timeout, broken connection).", "",
          "| table | acknowledged | stored | acknowledged but missing | stored, not acknowledged | unknown outcomes | |",
          "|---|---|---|---|---|---|---|"]
    for c in results["checks"]:
        L.append(f"| {c['name']} | {c['acked']} | {c['stored']} | {c['missing']} | {c['extra']} | {c['unknown']} | "
                 f"{'PASS' if c['ok'] else 'FAIL'} |")
    for c in results["checks"]:
        if c["missing"]:
            L.append(f"\n{c['name']}: missing e.g. {', '.join(c['missing_sample'])}")
        if c["extra"]:
            L.append(f"\n{c['name']}: stored, not acknowledged, e.g. {'; '.join(map(str, c['extra_sample']))}")
    L.append("")
    L.append("Publishes per publisher (acknowledged): " + ", ".join(f"{p.name} {p.sent}" for p in publishers) + ".")
    L.append(f"Payload keys stored more than once: {len(results['duplicate_keys'])}"
             + (f" (e.g. {list(results['duplicate_keys'].items())[:3]})" if results['duplicate_keys'] else "") + ".")
    L.append(f"Polls whose vote_count differs from their vote rows: {len(results['counter_mismatch'])}.")
    L += ["", "## Delivery: every stored event of its topics, once, in order", "",
          f"Consumers caught up {drain_s:.1f} s after the load stopped. The admin revoked a reader's token "
          f"{admin.actions['revoke']} times ({admin.actions['revoke, stream on another node']} through a node that "
          f"did not hold the stream) and closed a reader's stream {admin.actions['close']} times; "
          "each reader resumed from the closing frame's lastEventId (with a fresh token after a revocation).", "",
          "| consumer | selectors | stored | received | lost | duplicates | out of order | not its topics | resets "
          "| connections | tokens | how streams ended | first frames | longest silence s | |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for d in results["deliveries"]:
        L.append(f"| {d['name']} | `{d['selectors']}` | {d['expected']} | {d['received']} | {d['lost']} | {d['duplicates']} | "
                 f"{d['out_of_order']} | {d['foreign']} | {d['resets']} | {d['connects']} | {d['tokens']} | "
                 f"{', '.join(f'{k}×{v}' for k, v in d['ends'].items()) or '-'} | "
                 f"{', '.join(f'{k}×{v}' for k, v in d['first'].items()) or '-'} | {d['longest_wait']:.1f} | "
                 f"{'PASS' if d['ok'] else 'FAIL'} |")
    watchers = SESSION_WATCHERS
    if watchers:
        bad = [w for w in watchers if w.duplicates or w.out_of_order]
        L += ["", f"Session streams: {len(watchers)} watchers ({sum(1 for w in watchers if w.name.startswith('part-'))} "
                  f"with a participant token), {sum(w.frames for w in watchers)} frames; "
                  f"{len(bad)} saw a duplicate or out-of-order id; {sum(w.judged for w in watchers)} judged at "
                  f"their session's end (checks session-end and session-204)."]
    L += ["", "## Resources over time", "",
          "All clients are on 127.0.0.1, so the per-address caps (1,024 connections, 1,024 streams) apply to "
          "the whole load: *TCP* is pollcast_tcp_connections, the node's open connections, all from this "
          "harness.", ""] + time_table(sampler, health)
    L += ["", "## /healthz from a legitimate client (new connection each second, round robin)", ""]
    if ok_ms:
        L.append(f"{len(health.samples)} probes, {len(bad_health)} failed; latency ms p50 {fmt_ms(percentile(ok_ms, .5))}, "
                 f"p90 {fmt_ms(percentile(ok_ms, .9))}, p99 {fmt_ms(percentile(ok_ms, .99))}, max {fmt_ms(max(ok_ms))}.")
        for node in NODES:
            mine = [s[3] for s in health.samples if s[1] == node.name and s[3] is not None]
            if mine:
                L.append(f"- {node.name}: p50 {fmt_ms(percentile(mine, .5))}, p99 {fmt_ms(percentile(mine, .99))}, max {fmt_ms(max(mine))}")
    if bad_health:
        L.append("\nFailed probes: " + ", ".join(f"t={s[0]} {s[1]} {s[2]}" for s in bad_health[:20]))
    if storm.storms:
        firsts = [x for s in storm.storms for x in s[2]]
        L += ["", f"Reconnect storms (Last-Event-ID: 1 on `soak:*` and `*:*`, {CFG.storm_size} at once every "
                  f"{CFG.storm_every} s): {len(storm.storms)} storms; answers "
                  + ", ".join(f"{k}×{v}" for k, v in sum((s[1] for s in storm.storms), collections.Counter()).items())
                  + (f"; first replayed event after p50 {percentile(firsts, .5) * 1000:.0f} ms, "
                     f"max {max(firsts) * 1000:.0f} ms" if firsts else "") + "."]
    L += ["", "## 5xx answers", ""] + fivexx_lines
    L += ["## Outcomes per request kind", "",
          "Statuses are HTTP codes; `timeout`/`conn-error` mean no answer. Held connections are tallied "
          "by how they ended.", ""] + status_lines
    L += ["", "## Node logs", ""]
    for name, info in logs.items():
        exit_text = exit_codes.get(name)
        L.append(f"- {name}: exit {exit_text}, {info['lines']} lines ({info['size'] / 1024:.0f} KiB), panics {info['panics']}")
        for message, n in info["grouped"].most_common(8):
            L.append(f"  - {n} × `{message}`")
    L += ["", f"Raw data: samples.csv, healthz.csv, requests.csv, held.csv, checks.csv, node-*.log in `{CFG.out}`."]
    path.write_text("\n".join(L) + "\n")
    return path
