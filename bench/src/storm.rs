//! `storm`: subscribers connected, events flowing; at `--after` every
//! connection is reset at once and reopened with `Last-Event-ID` = the last
//! `id:` it saw. A subscriber is live again once it has a seq at least the
//! newest one answered 2xx when its new response head arrived (at once, if
//! it had that one already). At the end every subscriber must have seen
//! every published seq exactly once, across both connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::fanout::{publish_lines, publisher_for, subscribers_json, subscribers_text, Deliveries};
use crate::publisher::{self, Publisher};
use crate::sse::SseParser;
use crate::subscriber::{open_counted, pump, wait_connected, ConnectStats, End, StreamSpec, Tracker};
use crate::util::{self, latency_json, latency_text, redact, rss_kib, secs, unix_nanos, Target};
use crate::{report_rss, Report, StormArgs};

struct Shared {
    /// Cancelled to drop every connection.
    drop: CancellationToken,
    stop: CancellationToken,
    publisher: Arc<Publisher>,
    live: AtomicUsize,
    first: Arc<ConnectStats>,
    again: Arc<ConnectStats>,
    /// Subscribers connected that have not finished reconnecting.
    pending_reconnects: AtomicUsize,
}

struct Outcome {
    tracker: Tracker,
    resumed_with_id: bool,
    reconnected_ns: Option<u64>,
    live_ns: Option<u64>,
}

async fn subscriber(
    spec: Arc<StreamSpec>,
    index: usize,
    permits: Arc<Semaphore>,
    reconnect_permits: Arc<Semaphore>,
    shared: Arc<Shared>,
    limit: u64,
    not_before: u64,
) -> Option<Outcome> {
    // Counted as pending before it is counted as connected, so the
    // progress loop never sees a subscriber in neither state.
    shared.pending_reconnects.fetch_add(1, Ordering::Relaxed);
    let Some(mut conn) = open_counted(&spec, index, None, &permits, &shared.first).await else {
        shared.pending_reconnects.fetch_sub(1, Ordering::Relaxed);
        return None;
    };
    let mut parser = SseParser::new();
    let mut tracker = Tracker::new(limit, not_before);
    let end = pump(
        &mut conn,
        &mut parser,
        shared.drop.cancelled(),
        &mut |event, now, hist| {
            tracker.record(event, now, hist);
            true
        },
    )
    .await;
    if end != End::Stopped {
        shared.first.ended_early.fetch_add(1, Ordering::Relaxed);
        shared.drop.cancelled().await;
    }
    conn.abort();

    parser.new_connection();
    let last_id = parser.last_id().to_vec();
    let reopened = open_counted(&spec, index, Some(&last_id), &reconnect_permits, &shared.again).await;
    let reconnected_ns = unix_nanos();
    // Live once it has what was published by the time it is back.
    let mut live_target = shared
        .publisher
        .max_ok_seq()
        .filter(|&t| tracker.max_seq.is_none_or(|max| max < t));
    let mut live_ns = None;
    if reopened.is_some() && live_target.is_none() {
        live_ns = Some(reconnected_ns);
        shared.live.fetch_add(1, Ordering::Relaxed);
    }
    shared.pending_reconnects.fetch_sub(1, Ordering::Relaxed);
    let Some(mut conn) = reopened else {
        return Some(Outcome {
            tracker,
            resumed_with_id: !last_id.is_empty(),
            reconnected_ns: None,
            live_ns: None,
        });
    };
    let end = pump(
        &mut conn,
        &mut parser,
        shared.stop.cancelled(),
        &mut |event, now, hist| {
            if let Some(seq) = tracker.record(event, now, hist) {
                if live_target.is_some_and(|t| seq >= t) {
                    live_target = None;
                    live_ns = Some(now);
                    shared.live.fetch_add(1, Ordering::Relaxed);
                }
            }
            true
        },
    )
    .await;
    if end != End::Stopped {
        shared.again.ended_early.fetch_add(1, Ordering::Relaxed);
    }
    conn.abort();
    Some(Outcome {
        tracker,
        resumed_with_id: !last_id.is_empty(),
        reconnected_ns: Some(reconnected_ns),
        live_ns,
    })
}

/// The `q` quantile of sorted nanosecond durations, in ms.
fn quantile_ms(sorted: &[u64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i] as f64 / 1e6)
}

fn spread_json(sorted: &[u64]) -> serde_json::Value {
    serde_json::json!({
        "count": sorted.len(),
        "p50_ms": quantile_ms(sorted, 0.5),
        "p99_ms": quantile_ms(sorted, 0.99),
        "max_ms": quantile_ms(sorted, 1.0),
    })
}

fn spread_text(sorted: &[u64]) -> String {
    match (
        quantile_ms(sorted, 0.5),
        quantile_ms(sorted, 0.99),
        quantile_ms(sorted, 1.0),
    ) {
        (Some(p50), Some(p99), Some(max)) => format!("p50 {p50:.1}  p99 {p99:.1}  max {max:.1} ms"),
        _ => "none".into(),
    }
}

pub async fn run(args: StormArgs) -> Result<Option<Report>, String> {
    if args.after >= args.duration {
        return Err("--after must be shorter than --duration".into());
    }
    let n = args.subscribers;
    util::ensure_nofile(2 * n + 300);
    let planned = publisher::planned(args.rate, args.duration);
    let publisher = publisher_for(&args.publish, planned).await?;
    let target = Target::parse(&args.sub.subscribe_url).await?;
    let spec = Arc::new(StreamSpec::new(
        target,
        args.sub.subscribe_token.as_deref(),
        args.sub.source_ips_for(n),
        args.sub.connect_timeout,
    ));
    let pids = &args.sub.server_pids;
    let rss_before = rss_kib(pids);
    let shared = Arc::new(Shared {
        drop: CancellationToken::new(),
        stop: CancellationToken::new(),
        publisher: Arc::clone(&publisher),
        live: AtomicUsize::new(0),
        first: Arc::new(ConnectStats::default()),
        again: Arc::new(ConnectStats::default()),
        pending_reconnects: AtomicUsize::new(0),
    });
    let permits = Arc::new(Semaphore::new(args.sub.connect_concurrency.max(1)));
    let reconnect_concurrency = args
        .reconnect_concurrency
        .unwrap_or(args.sub.connect_concurrency)
        .max(1);
    let reconnect_permits = Arc::new(Semaphore::new(reconnect_concurrency));
    eprintln!(
        "storm: connecting {n} subscribers to {} from {} source address(es)",
        redact(&args.sub.subscribe_url),
        spec.source_count()
    );
    let not_before = unix_nanos();
    let tasks: Vec<_> = (0..n)
        .map(|index| {
            tokio::spawn(subscriber(
                Arc::clone(&spec),
                index,
                Arc::clone(&permits),
                Arc::clone(&reconnect_permits),
                Arc::clone(&shared),
                planned,
                not_before,
            ))
        })
        .collect();
    let connect_time = wait_connected(&shared.first, n, "storm").await;
    if shared.first.connected() == 0 {
        return Err(format!("no subscriber connected: {:?}", shared.first.failures()));
    }
    tokio::time::sleep(args.warmup).await;
    let rss_subscribed = rss_kib(pids);

    eprintln!(
        "storm: publishing {planned} events at {}/s; dropping every connection after {:?}",
        args.rate, args.after
    );
    let publish_start = Instant::now();
    let publishing = {
        let publisher = Arc::clone(&publisher);
        let (rate, cap) = (args.rate, args.publish.max_in_flight);
        tokio::spawn(async move { publisher.open_loop(rate, cap).await })
    };
    tokio::time::sleep(args.after).await;
    let seq_at_drop = publisher.max_ok_seq();
    let t0_ns = unix_nanos();
    let t0 = Instant::now();
    shared.drop.cancel();

    // Progress until everyone is back and live, or publishing ends.
    let mut last_print = Instant::now();
    while !publishing.is_finished() {
        let pending = shared.pending_reconnects.load(Ordering::Relaxed);
        let live = shared.live.load(Ordering::Relaxed);
        let back = shared.again.connected();
        if pending == 0 && live >= back {
            eprintln!(
                "storm: {back} reconnected, all live after {:.3}s",
                t0.elapsed().as_secs_f64()
            );
            break;
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            eprintln!("storm: {back} reconnected, {live} live, {pending} still reconnecting…");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = publishing.await;
    let publish_took = publish_start.elapsed();
    tokio::time::sleep(args.drain).await;
    let rss_end = rss_kib(pids);
    shared.stop.cancel();
    let mut outcomes = Vec::with_capacity(n);
    for task in tasks {
        if let Ok(Some(outcome)) = task.await {
            outcomes.push(outcome);
        }
    }

    let summary = publisher.summary();
    let since_drop = |ns: u64| ns.saturating_sub(t0_ns);
    let mut reconnect_times: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.reconnected_ns.map(since_drop))
        .collect();
    let mut live_times: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.live_ns.map(since_drop))
        .collect();
    reconnect_times.sort_unstable();
    live_times.sort_unstable();
    let reconnected = reconnect_times.len();
    let never_live = reconnected - live_times.len();
    let without_id = outcomes.iter().filter(|o| !o.resumed_with_id).count();
    let all_live_ms = (never_live == 0).then(|| quantile_ms(&live_times, 1.0)).flatten();
    let trackers: Vec<Tracker> = outcomes.into_iter().map(|o| o.tracker).collect();
    let deliveries = Deliveries::count(&trackers, &summary.ok_seqs);
    let latencies = util::merged_latencies();
    let sources = spec.source_count();

    let mut report = Report::new("storm");
    report.set("subscribe_url", redact(&args.sub.subscribe_url));
    report.set("publish_url", args.publish.publish_url.clone());
    report.line("target", redact(&args.sub.subscribe_url));
    report.set(
        "subscribers",
        subscribers_json(&shared.first, n, secs(connect_time), sources),
    );
    report.line(
        "subscribers",
        subscribers_text(&shared.first, secs(connect_time), sources),
    );
    publish_lines(&mut report, &summary, args.rate, secs(publish_took));
    report.set(
        "storm",
        serde_json::json!({
            "drop_after_seconds": secs(args.after),
            "newest_seq_at_drop": seq_at_drop,
            "reconnect_concurrency": reconnect_concurrency,
            "reconnected": shared.again.connected(),
            "reconnect_failed": shared.again.failed(),
            "reconnect_failures": shared.again.failures(),
            "reconnected_without_last_event_id": without_id,
            "ended_early_after_reconnect": shared.again.ended_early(),
            "time_to_reconnect": spread_json(&reconnect_times),
            "time_to_live": spread_json(&live_times),
            "never_live": never_live,
            "time_to_all_live_ms": all_live_ms,
        }),
    );
    let mut back = format!(
        "{} of {} reconnected ({} failed, {} without a Last-Event-ID); time to reconnect {}",
        shared.again.connected(),
        shared.first.connected(),
        shared.again.failed(),
        without_id,
        spread_text(&reconnect_times)
    );
    let failures = shared.again.failures();
    if !failures.is_empty() {
        back.push_str(&format!(" failures {failures:?}"));
    }
    report.line("reconnect", back);
    report.line(
        "time to live",
        format!(
            "{} (newest seq at the drop {}; {never_live} never live)",
            spread_text(&live_times),
            seq_at_drop.map_or("-".to_string(), |s| s.to_string())
        ),
    );
    report.line(
        "time to all live",
        all_live_ms.map_or("not reached".to_string(), |ms| format!("{ms:.1} ms")),
    );
    report.set("deliveries", deliveries.json());
    report.line("deliveries", deliveries.text());
    let verdict = if deliveries.missing == 0 && deliveries.duplicates == 0 && never_live == 0 {
        "OK: every published event seen exactly once by every subscriber".to_string()
    } else {
        format!(
            "FAILED: {} subscribers with gaps ({} events), {} with duplicates ({} events)",
            deliveries.subscribers_missing,
            deliveries.missing,
            deliveries.subscribers_with_duplicates,
            deliveries.duplicates
        )
    };
    let exactly_once = deliveries.missing == 0 && deliveries.duplicates == 0;
    report.set("exactly_once", exactly_once);
    report.line("verdict", verdict);
    if summary.ok == 0 {
        report.fail("no event was published (see `published`)");
    } else if !exactly_once || never_live > 0 {
        report.fail("not every subscriber saw every event exactly once and got live again");
    }
    report.set("latency", latency_json(&latencies));
    report.line("latency ms", latency_text(&latencies));
    report_rss(
        &mut report,
        rss_before,
        rss_subscribed,
        rss_end,
        shared.first.connected(),
    );
    Ok(Some(report))
}
