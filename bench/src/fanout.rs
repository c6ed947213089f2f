//! `fanout` (N subscribers, open-loop publisher) and `idle` (N subscribers,
//! memory only).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::publisher::{self, Publisher, Summary};
use crate::subscriber::{open_counted, pump, wait_connected, ConnectStats, End, StreamSpec, Tracker};
use crate::util::{self, latency_json, latency_text, redact, rss_kib, secs, unix_nanos, Bits, Target};
use crate::{percent, report_rss, FanoutArgs, IdleArgs, PublishArgs, Report, SubscribeArgs};

/// The subscribers of one run and what they share.
pub struct Swarm {
    pub spec: Arc<StreamSpec>,
    pub stats: Arc<ConnectStats>,
    pub stop: CancellationToken,
    tasks: Vec<JoinHandle<Option<Tracker>>>,
}

impl Swarm {
    /// Starts `n` subscriber tasks; each counts `seq`s below `limit`.
    pub async fn start(args: &SubscribeArgs, n: usize, limit: u64, what: &str) -> Result<Swarm, String> {
        let not_before = unix_nanos();
        util::ensure_nofile(n + 300);
        let target = Target::parse(&args.subscribe_url).await?;
        let spec = Arc::new(StreamSpec::new(
            target,
            args.subscribe_token.as_deref(),
            args.source_ips_for(n),
            args.connect_timeout,
        ));
        let stats = Arc::new(ConnectStats::default());
        let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
        let stop = CancellationToken::new();
        eprintln!(
            "{what}: connecting {n} subscribers to {} from {} source address(es)",
            redact(&args.subscribe_url),
            spec.source_count()
        );
        let tasks = (0..n)
            .map(|index| {
                let (spec, stats, permits, stop) = (
                    Arc::clone(&spec),
                    Arc::clone(&stats),
                    Arc::clone(&permits),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let mut conn = open_counted(&spec, index, None, &permits, &stats).await?;
                    let mut parser = crate::sse::SseParser::new();
                    let mut tracker = Tracker::new(limit, not_before);
                    let end = pump(
                        &mut conn,
                        &mut parser,
                        stop.cancelled(),
                        &mut |event, now, hist| {
                            tracker.record(event, now, hist);
                            true
                        },
                    )
                    .await;
                    if end != End::Stopped {
                        stats.ended_early.fetch_add(1, Ordering::Relaxed);
                    }
                    conn.abort();
                    Some(tracker)
                })
            })
            .collect();
        Ok(Swarm {
            spec,
            stats,
            stop,
            tasks,
        })
    }

    /// Stops every subscriber and collects what each saw.
    pub async fn finish(self) -> Vec<Tracker> {
        self.stop.cancel();
        let mut trackers = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            if let Ok(Some(tracker)) = task.await {
                trackers.push(tracker);
            }
        }
        trackers
    }
}

pub fn subscribers_json(
    stats: &ConnectStats,
    n: usize,
    connect_secs: f64,
    sources: usize,
) -> serde_json::Value {
    serde_json::json!({
        "requested": n,
        "connected": stats.connected(),
        "failed": stats.failed(),
        "failures": stats.failures(),
        "ended_early": stats.ended_early(),
        "connect_seconds": connect_secs,
        "source_ips": sources,
    })
}

pub fn subscribers_text(stats: &ConnectStats, connect_secs: f64, sources: usize) -> String {
    let mut text = format!(
        "{} connected, {} failed, {} ended early (connected in {connect_secs:.2}s from {sources} source IP(s))",
        stats.connected(),
        stats.failed(),
        stats.ended_early()
    );
    let failures = stats.failures();
    if !failures.is_empty() {
        text.push_str(&format!(" failures {failures:?}"));
    }
    text
}

pub async fn publisher_for(args: &PublishArgs, planned: u64) -> Result<Arc<Publisher>, String> {
    let target = Target::parse(&args.publish_url).await?;
    let client = Client::new(target, args.publish_timeout)?;
    Ok(Publisher::new(
        client,
        args.publish_style,
        args.publish_token.clone(),
        args.event_type.clone(),
        planned,
    ))
}

/// Deliveries of the published events, summed over subscribers.
#[derive(Debug, Default)]
pub struct Deliveries {
    pub expected: u64,
    pub received: u64,
    /// Published-OK events each subscriber saw, summed.
    pub delivered: u64,
    pub missing: u64,
    pub subscribers_missing: u64,
    pub duplicates: u64,
    pub subscribers_with_duplicates: u64,
    pub out_of_order: u64,
    pub reordered: u64,
    /// Seen but never answered 2xx (e.g. a POST that timed out after commit).
    pub unacknowledged: u64,
    pub foreign: u64,
    pub resets: u64,
    pub last_recv_ns: u64,
}

impl Deliveries {
    pub fn count(trackers: &[Tracker], ok: &Bits) -> Deliveries {
        let ok_count = ok.len();
        let mut d = Deliveries::default();
        for t in trackers {
            let missing = ok.count_not_in(&t.seen);
            d.expected += ok_count;
            d.received += t.received;
            d.delivered += ok_count - missing;
            d.missing += missing;
            d.subscribers_missing += u64::from(missing > 0);
            d.duplicates += t.duplicates;
            d.subscribers_with_duplicates += u64::from(t.duplicates > 0);
            d.out_of_order += t.out_of_order;
            d.reordered += t.reordered;
            d.unacknowledged += t.seen.count_not_in(ok);
            d.foreign += t.foreign;
            d.resets += t.resets;
            d.last_recv_ns = d.last_recv_ns.max(t.last_recv_ns);
        }
        d
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "expected": self.expected,
            "received": self.received,
            "delivered": self.delivered,
            "delivered_percent": percent(self.delivered, self.expected),
            "missing": self.missing,
            "subscribers_missing_events": self.subscribers_missing,
            "duplicates": self.duplicates,
            "subscribers_with_duplicates": self.subscribers_with_duplicates,
            "out_of_order_ids": self.out_of_order,
            "seq_behind_earlier_seq": self.reordered,
            "unacknowledged_seen": self.unacknowledged,
            "other_runs_events": self.foreign,
            "resets": self.resets,
        })
    }

    pub fn text(&self) -> String {
        let mut text = format!(
            "{} of {} expected ({:.3}%), {} received, {} missing, {} duplicates, {} ids out of order \
             ({} after a later-published seq: concurrent POSTs)",
            self.delivered,
            self.expected,
            percent(self.delivered, self.expected),
            self.received,
            self.missing,
            self.duplicates,
            self.out_of_order,
            self.reordered
        );
        for (n, what) in [
            (self.unacknowledged, "seen without a 2xx"),
            (self.foreign, "from other runs (ignored)"),
            (self.resets, "connection:reset"),
        ] {
            if n > 0 {
                text.push_str(&format!(", {n} {what}"));
            }
        }
        text
    }
}

pub fn publish_lines(report: &mut Report, summary: &Summary, rate: f64, took: f64) {
    let mut json = summary.json();
    json["rate"] = rate.into();
    json["seconds"] = took.into();
    report.set("published", json);
    report.line(
        "published",
        format!(
            "{} (at {rate}/s over {took:.2}s, schedule lag max {:.1} ms)",
            summary.text(),
            summary.lag_max_ms
        ),
    );
}

pub async fn fanout(args: FanoutArgs) -> Result<Option<Report>, String> {
    let n = args.subscribers;
    let planned = publisher::planned(args.rate, args.duration);
    let publisher = publisher_for(&args.publish, planned).await?;
    let pids = &args.sub.server_pids;
    let rss_before = rss_kib(pids);

    let swarm = Swarm::start(&args.sub, n, planned, "fanout").await?;
    let connect_time = wait_connected(&swarm.stats, n, "fanout").await;
    if swarm.stats.connected() == 0 {
        return Err(format!("no subscriber connected: {:?}", swarm.stats.failures()));
    }
    tokio::time::sleep(args.warmup).await;
    let rss_subscribed = rss_kib(pids);

    eprintln!(
        "fanout: publishing {planned} events at {}/s to {}",
        args.rate, args.publish.publish_url
    );
    let publish_start_ns = unix_nanos();
    let publish_start = Instant::now();
    publisher.open_loop(args.rate, args.publish.max_in_flight).await;
    let publish_took = publish_start.elapsed();
    tokio::time::sleep(args.drain).await;
    let rss_end = rss_kib(pids);
    let ended_early_before_stop = swarm.stats.ended_early();

    let stats = Arc::clone(&swarm.stats);
    let sources = swarm.spec.source_count();
    let trackers = swarm.finish().await;
    let summary = publisher.summary();
    let deliveries = Deliveries::count(&trackers, &summary.ok_seqs);
    let latencies = util::merged_latencies();
    let window = deliveries.last_recv_ns.saturating_sub(publish_start_ns) as f64 / 1e9;
    let per_second = if window > 0.0 {
        deliveries.received as f64 / window
    } else {
        0.0
    };

    let mut report = Report::new("fanout");
    report.set("subscribe_url", redact(&args.sub.subscribe_url));
    report.set("publish_url", args.publish.publish_url.clone());
    report.line("target", redact(&args.sub.subscribe_url));
    let mut subs = subscribers_json(&stats, n, secs(connect_time), sources);
    subs["ended_early"] = ended_early_before_stop.into();
    report.set("subscribers", subs);
    report.line(
        "subscribers",
        subscribers_text(&stats, secs(connect_time), sources),
    );
    publish_lines(&mut report, &summary, args.rate, secs(publish_took));
    report.set("deliveries", deliveries.json());
    report.line("deliveries", deliveries.text());
    report.set(
        "throughput",
        serde_json::json!({ "deliveries_per_second": per_second, "window_seconds": window }),
    );
    report.line(
        "throughput",
        format!("{per_second:.0} deliveries/s (first publish to last delivery: {window:.2}s)"),
    );
    report.set("latency", latency_json(&latencies));
    report.line("latency ms", latency_text(&latencies));
    report_rss(
        &mut report,
        rss_before,
        rss_subscribed,
        rss_end,
        stats.connected(),
    );
    if summary.ok == 0 {
        report.fail("no event was published (see `published`)");
    }
    Ok(Some(report))
}

pub async fn idle(args: IdleArgs) -> Result<Option<Report>, String> {
    let n = args.subscribers;
    let pids = &args.sub.server_pids;
    let rss_before = rss_kib(pids);
    let swarm = Swarm::start(&args.sub, n, 0, "idle").await?;
    let connect_time = wait_connected(&swarm.stats, n, "idle").await;
    if swarm.stats.connected() == 0 {
        return Err(format!("no subscriber connected: {:?}", swarm.stats.failures()));
    }
    eprintln!("idle: waiting {:?}", args.settle);
    tokio::time::sleep(args.settle).await;
    let rss_subscribed = rss_kib(pids);
    let stats = Arc::clone(&swarm.stats);
    let sources = swarm.spec.source_count();
    let ended_early = stats.ended_early();
    let _ = swarm.finish().await;

    let mut report = Report::new("idle");
    report.set("subscribe_url", redact(&args.sub.subscribe_url));
    report.line("target", redact(&args.sub.subscribe_url));
    let mut subs = subscribers_json(&stats, n, secs(connect_time), sources);
    subs["ended_early"] = ended_early.into();
    report.set("subscribers", subs);
    report.line(
        "subscribers",
        subscribers_text(&stats, secs(connect_time), sources),
    );
    report.set("wait_seconds", secs(args.settle));
    report_rss(&mut report, rss_before, rss_subscribed, None, stats.connected());
    Ok(Some(report))
}
