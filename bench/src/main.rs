//! `pollcast-bench`: the load generator for pollcast (and any SSE server
//! whose `data:` carries `"sentAt":<unix nanos>` and `"seq":<n>`, such as
//! Nchan). See `bench/README.md` for the workloads and example commands.
//!
//! - `fanout`: N subscribers, an open-loop publisher; deliveries, latency,
//!   server RSS.
//! - `idle`: N idle subscribers; server RSS per subscriber.
//! - `ingest`: pollcast's vote endpoint with many participants; votes/s.
//! - `replay`: one client resuming a long backlog; time until live.
//! - `storm`: every subscriber dropped and resuming with Last-Event-ID
//!   while events flow; time until all are live, gaps, duplicates.
//!
//! One tokio runtime (`--threads` workers); SSE is parsed by hand from a
//! per-thread read buffer; latencies go to per-thread HDR histograms that
//! are merged at the end.

mod client;
mod fanout;
mod ingest;
mod publisher;
mod replay;
mod sse;
mod storm;
mod subscriber;
mod util;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use publisher::Style;
use util::parse_duration;

#[derive(Debug, Parser)]
#[command(
    name = "pollcast-bench",
    version,
    about = "Load generator for SSE servers: fan-out, idle memory, vote ingest, replay, reconnect storms"
)]
struct Cli {
    /// Tokio worker threads.
    #[arg(long, global = true, default_value_t = 2)]
    threads: usize,

    /// Print one JSON object with all results instead of text (progress
    /// still goes to stderr).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N subscribers, events published at a fixed open-loop rate:
    /// deliveries, deliveries/s, latency percentiles, server RSS.
    Fanout(FanoutArgs),
    /// N idle subscribers: server RSS before and after, per subscriber.
    Idle(IdleArgs),
    /// pollcast vote ingest: one session and poll, many participants, each
    /// voting once from --concurrency clients: votes/s and latency.
    Ingest(IngestArgs),
    /// Publish a backlog, then one client resumes from before it: time
    /// until it has all of it (is live), events/s.
    Replay(ReplayArgs),
    /// Subscribers all dropped while events flow and resuming with
    /// Last-Event-ID: time until all are live, gaps and duplicates.
    Storm(StormArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SubscribeArgs {
    /// SSE URL, e.g. http://127.0.0.1:8080/v1/events?topic=bench:f1&access_token=T
    /// or http://127.0.0.1:8090/sub/f1 (Nchan).
    #[arg(long)]
    pub subscribe_url: String,

    /// Sent as `Authorization: Bearer` on SSE requests (else put
    /// access_token in the URL).
    #[arg(long, env = "POLLCAST_BENCH_SUBSCRIBE_TOKEN", hide_env_values = true)]
    pub subscribe_token: Option<String>,

    /// Bind subscriber sockets round-robin to 127.0.0.1..=127.0.0.K (each
    /// source address has ~28k ephemeral ports). Default: ceil(N/20000).
    #[arg(long)]
    pub source_ips: Option<u32>,

    /// Subscriptions being opened at once (TCP connect until response head).
    /// Keep it under the server's listen backlog (pollcast asks for 8,192;
    /// tokio's default is 128), or dropped SYNs add 1 s retransmits.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Give up on one subscription after this long.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Server process whose VmRSS is read (repeatable: the values are
    /// summed, e.g. nginx master and workers).
    #[arg(long = "server-pid")]
    pub server_pids: Vec<u32>,
}

impl SubscribeArgs {
    pub fn source_ips_for(&self, subscribers: usize) -> u32 {
        self.source_ips
            .unwrap_or_else(|| subscribers.div_ceil(20_000).max(1) as u32)
    }
}

#[derive(Debug, Clone, Args)]
pub struct PublishArgs {
    /// Where events are POSTed, e.g. http://127.0.0.1:8080/v1/topics/bench:f1/events
    /// or http://127.0.0.1:8090/pub/f1 (Nchan).
    #[arg(long)]
    pub publish_url: String,

    /// pollcast: `{"type":…,"payload":{"sentAt":…,"seq":…}}` with a bearer
    /// token; nchan: the raw `{"sentAt":…,"seq":…}`.
    #[arg(long, value_enum, default_value = "pollcast")]
    pub publish_style: Style,

    /// Bearer token for publishing (pollcast style).
    #[arg(long, env = "POLLCAST_BENCH_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,

    /// Event type of published events (pollcast style).
    #[arg(long, default_value = "bench:tick")]
    pub event_type: String,

    /// Most POSTs in flight; a send due while this many are outstanding is
    /// skipped and counted, so a slow server never slows the schedule.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,

    /// A POST without an answer after this long counts as an error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub publish_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub sub: SubscribeArgs,
    #[command(flatten)]
    pub publish: PublishArgs,

    /// Subscribers to connect.
    #[arg(long, default_value_t = 100)]
    pub subscribers: usize,

    /// Events per second (open loop).
    #[arg(long, default_value = "10", value_parser = util::parse_rate)]
    pub rate: f64,

    /// How long to publish.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Wait after every subscriber is connected, before publishing.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Wait for stragglers after the last publish.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub sub: SubscribeArgs,

    /// Subscribers to connect.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,

    /// Wait after every subscriber is connected, before reading RSS.
    #[arg(long = "wait", default_value = "5s", value_parser = parse_duration)]
    pub settle: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// pollcast's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,

    /// Participants to join (each votes once).
    #[arg(long, default_value_t = 50_000)]
    pub participants: usize,

    /// Concurrent voting clients (and joining clients, unless
    /// --join-concurrency).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// Concurrent joins while setting up (not timed).
    #[arg(long)]
    pub join_concurrency: Option<usize>,

    /// Sent as X-Admin-Key when creating the session.
    #[arg(long, env = "POLLCAST_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,

    /// Stop voting after this long even if participants are left.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// A request without an answer after this long counts as an error.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// SSE URL of the topic the backlog is published to.
    #[arg(long)]
    pub subscribe_url: String,

    /// Sent as `Authorization: Bearer` on the SSE request.
    #[arg(long, env = "POLLCAST_BENCH_SUBSCRIBE_TOKEN", hide_env_values = true)]
    pub subscribe_token: Option<String>,

    /// Where the backlog is POSTed (not needed with --first-id).
    #[arg(long)]
    pub publish_url: Option<String>,

    #[arg(long, value_enum, default_value = "pollcast")]
    pub publish_style: Style,

    #[arg(long, env = "POLLCAST_BENCH_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,

    #[arg(long, default_value = "bench:tick")]
    pub event_type: String,

    /// Events in the backlog.
    #[arg(long, default_value_t = 100_000)]
    pub backlog: u64,

    /// Concurrent POSTs while publishing the backlog (not timed).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// Only publish the backlog and print its first event id (a bare
    /// number on stdout), for later runs with --first-id.
    #[arg(long)]
    pub print_first_id: bool,

    /// Skip publishing: the backlog of --backlog events starts at this id.
    #[arg(long, conflicts_with = "print_first_id")]
    pub first_id: Option<u64>,

    /// Send this Last-Event-ID instead of (first id - 1), e.g. for Nchan.
    #[arg(long)]
    pub last_event_id: Option<String>,

    /// Give up waiting for the backlog after this long.
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub timeout: Duration,

    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub publish_timeout: Duration,

    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub sub: SubscribeArgs,
    #[command(flatten)]
    pub publish: PublishArgs,

    /// Subscribers to connect, drop and reconnect.
    #[arg(long, default_value_t = 5000)]
    pub subscribers: usize,

    /// Events per second (open loop), before, during and after the storm.
    #[arg(long, default_value = "50", value_parser = util::parse_rate)]
    pub rate: f64,

    /// How long to publish in all.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,

    /// When to drop every connection, counted from the first publish.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub after: Duration,

    /// Wait after every subscriber is connected, before publishing.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Wait for stragglers after the last publish.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub drain: Duration,

    /// Reconnections being opened at once (default: --connect-concurrency).
    #[arg(long)]
    pub reconnect_concurrency: Option<usize>,
}

/// Results as aligned text lines and as one JSON object.
pub struct Report {
    name: &'static str,
    lines: Vec<(String, String)>,
    json: serde_json::Map<String, serde_json::Value>,
    /// Why the results do not count (the exit status is then 3).
    failures: Vec<String>,
}

impl Report {
    pub fn new(name: &'static str) -> Self {
        let mut json = serde_json::Map::new();
        json.insert("workload".into(), name.into());
        Report {
            name,
            lines: Vec::new(),
            json,
            failures: Vec::new(),
        }
    }

    /// Marks the run as failed (exit status 3), with the reason.
    pub fn fail(&mut self, reason: impl Into<String>) {
        self.failures.push(reason.into());
    }

    pub fn line(&mut self, label: &str, text: impl Into<String>) {
        self.lines.push((label.to_string(), text.into()));
    }

    pub fn set(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.json.insert(key.to_string(), value.into());
    }

    /// Prints the results; false when the run failed.
    pub fn print(mut self, json: bool) -> bool {
        let ok = self.failures.is_empty();
        if json {
            self.json.insert("ok".into(), ok.into());
            self.json.insert("failures".into(), self.failures.clone().into());
            println!("{}", serde_json::Value::Object(self.json));
        } else {
            println!("pollcast-bench {}", self.name);
            for (label, text) in self.lines {
                println!("  {label:<20} {text}");
            }
            for failure in &self.failures {
                println!("  {:<20} {failure}", "FAILED");
            }
        }
        ok
    }
}

/// `a/b` as a percentage, 100 when nothing was expected.
pub fn percent(a: u64, b: u64) -> f64 {
    if b == 0 {
        100.0
    } else {
        a as f64 * 100.0 / b as f64
    }
}

/// Server RSS lines: before, after subscribing, optionally at the end, and
/// the growth per subscriber.
pub fn report_rss(
    report: &mut Report,
    before: Option<u64>,
    subscribed: Option<u64>,
    end: Option<u64>,
    n: usize,
) {
    let per_sub = match (before, subscribed) {
        (Some(b), Some(a)) if n > 0 => Some((a as f64 - b as f64) / n as f64),
        _ => None,
    };
    report.set(
        "server_rss_kib",
        serde_json::json!({
            "before": before,
            "after_subscribe": subscribed,
            "end": end,
            "per_subscriber": per_sub,
        }),
    );
    report.set("client_rss_kib", util::self_rss_kib());
    let show = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    match per_sub {
        Some(per) => {
            let mut text = format!(
                "before {}  after-subscribe {}  (+{per:.2} KiB/subscriber)",
                show(before),
                show(subscribed)
            );
            if end.is_some() {
                text.push_str(&format!("  end {}", show(end)));
            }
            report.line("server RSS KiB", text);
        }
        None => report.line("server RSS KiB", "not measured (give --server-pid)"),
    }
    report.line("client RSS KiB", show(util::self_rss_kib()));
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Fanout(args) => fanout::fanout(args).await,
            Command::Idle(args) => fanout::idle(args).await,
            Command::Ingest(args) => ingest::run(args).await,
            Command::Replay(args) => replay::run(args).await,
            Command::Storm(args) => storm::run(args).await,
        }
    });
    // Subscriber tasks may still hold sockets; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(Some(report)) => {
            if report.print(json) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
