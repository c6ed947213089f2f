"""The run: start the clients, stop the load after SOAK_DURATION, drain,
verify, report. See the package docstring for what and why."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import time

from .client import NODES, bearer, http, jwt, mint
from .cluster import Cluster, Run, Sampler
from .config import CFG, log
from .hostile import HELD_KINDS
from .legit import Admin, HealthProbe, HistoryReader, Publisher, SseReader
from .oneshots import OneShots, PublishFlood, ReconnectStorm
from .records import CHECKS, LEDGER
from .report import write_csvs, write_report
from .sessions import Presenter
from .verify import drain, judge, scan_logs, verify


async def soak(cluster: Cluster) -> int:
    run = Run(cluster)
    loop = asyncio.get_running_loop()
    interrupts = 0
    main_task = asyncio.current_task()

    def on_interrupt():
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            log("interrupted: stopping the load, then verifying and reporting (Ctrl-C again to stop at once)")
            run.interrupted = True
            run.load_stopped.set()
        else:
            main_task.cancel()
    loop.add_signal_handler(signal.SIGINT, on_interrupt)
    loop.add_signal_handler(signal.SIGTERM, main_task.cancel)

    secret = cluster.secret
    soak_rw = dict(publish=["soak:*"], subscribe=["soak:*"])
    publisher_tokens = [mint(secret, f"pub-{i}", **soak_rw) for i in range(CFG.publishers)]
    history_token = mint(secret, "history", subscribe=["soak:*"])
    hostile_token = mint(secret, "hostile", publish=["soak:*", "hostile:*"], subscribe=["soak:*"])
    storm_token = mint(secret, "storm", subscribe=["soak:*"])
    flood_token = mint(secret, "flood", publish=["flood:*"])

    # The hostile tokens are minted here in Python: check that a good one is
    # accepted, so that refusing the expired or forged ones means something.
    control = jwt({"sub": "control", "exp": int(time.time()) + 600, "subscribe": ["soak:*"]}, secret)
    check = await http(NODES[0], "GET", "/v1/events/history?topic=soak:*", headers=bearer(control))
    if check.status != 200:
        log(f"a token minted by this script was refused ({check.status} {check.body[:200]!r}); cannot go on")
        return 2

    publishers = [Publisher(run, i, publisher_tokens[i], idempotent=i % 2 == 1) for i in range(CFG.publishers)]
    selector_sets = [["soak:*"], ["soak:t0", "soak:t1"], ["soak:*"], ["soak:t2", "soak:t3"]]
    styles = ["header", "query", "eventsource", "header"]
    readers = [SseReader(run, i, selector_sets[i % 4], styles[i % 4]) for i in range(CFG.readers)]
    history = HistoryReader(run, history_token)
    presenters = [Presenter(run, i) for i in range(CFG.presenters)]
    admin = Admin(run, readers)
    health = HealthProbe(run)
    sampler = Sampler(run)
    storm = ReconnectStorm(run, storm_token)
    flood = PublishFlood(run, flood_token)
    held = [HELD_KINDS[k](run, n, hostile_token) for k, n in CFG.held.items()]
    oneshots = OneShots(run, hostile_token)

    consumers = [asyncio.create_task(r.run_forever()) for r in readers + [history]]
    sampling = asyncio.create_task(sampler.run_forever())
    await asyncio.sleep(1)     # readers are connected before the first publish
    producers = [asyncio.create_task(x.run_forever()) for x in
                 publishers + presenters + held + [admin, health, storm, flood, oneshots]]
    log(f"load running for {CFG.duration} s: {len(publishers)} publishers, {len(readers)} SSE readers, "
        f"1 history reader, {len(presenters)} presenters, an admin, {sum(CFG.held.values())} held hostile "
        f"connections, {len(CFG.every)} one-shot hostile kinds, storms and floods every "
        f"{CFG.storm_every}/{CFG.flood_every} s")

    progress_every = max(30, min(300, CFG.duration // 10))
    deadline = time.monotonic() + CFG.duration
    while time.monotonic() < deadline and not run.load_stopped.is_set():
        await run.sleep(min(progress_every, deadline - time.monotonic()))
        dead = [n.name for n in NODES if n.proc.poll() is not None]
        last = sampler.rows[-1] if sampler.rows else {}
        failed = sum(len(f) for f in CHECKS.failures.values())
        log(f"t={run.elapsed():.0f}s publishes acked {len(LEDGER.events)}, votes {len(LEDGER.votes)}, "
            f"joins {len(LEDGER.participants)}; checks {sum(CHECKS.made.values())}, failed {failed}; RSS MiB " +
            " ".join(f"{n.name}={(last.get(f'{n.name}_rss_kib') or 0) / 1024:.0f}" for n in NODES) +
            (f"; DEAD: {dead}" if dead else ""))
    run.load_seconds = run.elapsed()
    run.load_stopped.set()
    log("load stopped; waiting for producers and hostile clients to finish")
    done, pending = await asyncio.wait(producers, timeout=max(45, CFG.poll_seconds + 20))
    for task in pending:
        task.cancel()
    await asyncio.gather(*producers, return_exceptions=True)
    await asyncio.gather(sampling, return_exceptions=True)

    log("letting consumers catch up")
    drain_s = await drain(run, readers + [history], cluster)
    run.readers_stop.set()
    await asyncio.wait(consumers, timeout=2)     # caught up; a long-poll in flight is not waited for
    for task in consumers:
        task.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    # A client of this harness that crashed makes the run incomplete: a failure.
    crashed = [f"{task.get_coro().__qualname__}: {task.exception()!r}" for task in producers + consumers + [sampling]
               if task.done() and not task.cancelled() and task.exception()]
    for text in crashed:
        log(f"harness client crashed: {text}")

    log("comparing acknowledged with stored")
    results = await asyncio.to_thread(verify, cluster, readers + [history])
    alive = {n.name: n.proc.poll() is None for n in NODES}
    exit_codes = await asyncio.to_thread(cluster.stop_nodes)
    logs = scan_logs()
    problems, findings = judge(results, alive, exit_codes, logs, health, crashed)

    verdict_ok = not problems
    CFG.out.mkdir(parents=True, exist_ok=True)
    write_csvs(sampler, health)
    path = write_report(run, sampler, health, storm, publishers, admin, results, logs, exit_codes, drain_s,
                        verdict_ok, problems, findings)
    summary = "; ".join(f"{c['name'].split()[0]} {c['acked']}/{c['stored']}" for c in results["checks"])
    print(f"\nsoak: report {path}")
    print(f"soak: {'PASS' if verdict_ok else 'FAIL'}{' (interrupted)' if run.interrupted else ''}: "
          f"{run.load_seconds:.0f} s, acked/stored {summary}; "
          f"{len(problems)} failures, {len(findings)} findings"
          + (f" — {problems[0]}" if problems else ""))
    if not verdict_ok:
        return 1
    return 130 if run.interrupted else 0


def main() -> int:
    random.seed(CFG.seed)
    with contextlib.suppress(ValueError, OSError):
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cluster = Cluster()
    # Until the event loop installs its own handlers, a signal ends the setup cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    status = 2
    try:
        cluster.prepare()
        cluster.start_nodes()
        status = asyncio.run(soak(cluster))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("stopped")
        status = 130
    except subprocess.CalledProcessError as error:
        log(f"setup failed: {error} {error.stderr or ''}")
        status = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)    # let the cleanup finish
        cluster.stop_nodes()
        cluster.drop()
    return status
