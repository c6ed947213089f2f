//! `replay`: publish a backlog (untimed, `--concurrency` POSTs at a time),
//! then one client asks for everything after it with `Last-Event-ID` and
//! is timed from its request until it holds the whole backlog, i.e. until
//! it is live.

use std::time::Instant;

use crate::client::Client;
use crate::publisher::{Publisher, Style};
use crate::sse::SseParser;
use crate::subscriber::{pump, End, StreamSpec, Tracker};
use crate::util::{redact, secs, Target};
use crate::{percent, ReplayArgs, Report};

pub async fn run(args: ReplayArgs) -> Result<Option<Report>, String> {
    let mut report = Report::new("replay");
    let run_start = crate::util::unix_nanos();
    let backlog = args.backlog.max(1);
    let subscribe = Target::parse(&args.subscribe_url).await?;

    // The backlog: its first and last ids, and how many events it holds.
    let (first_id, last_id, expected) = match args.first_id {
        Some(first) => (Some(first), None, backlog),
        None => {
            let url = args
                .publish_url
                .as_deref()
                .ok_or("give --publish-url (or --first-id for a backlog published before)")?;
            let client = Client::new(Target::parse(url).await?, args.publish_timeout)?;
            let publisher = Publisher::new(
                client,
                args.publish_style,
                args.publish_token.clone(),
                args.event_type.clone(),
                backlog,
            );
            eprintln!(
                "replay: publishing {backlog} events to {url} with {} concurrent POSTs",
                args.concurrency
            );
            let started = Instant::now();
            publisher.closed_loop(args.concurrency.max(1)).await;
            let took = secs(started.elapsed());
            let summary = publisher.summary();
            eprintln!(
                "replay: published {} in {took:.2}s ({:.0}/s)",
                summary.ok,
                summary.ok as f64 / took
            );
            if summary.ok == 0 {
                return Err(format!("nothing was published: {}", summary.text()));
            }
            if args.publish_style == Style::Pollcast && summary.ids.is_none() {
                return Err("the publish responses carried no \"id\"".into());
            }
            let (first, last) = match summary.ids {
                Some((first, last)) => (Some(first), Some(last)),
                None => (None, None),
            };
            if args.print_first_id {
                match first {
                    Some(first) => println!("{first}"),
                    None => return Err("no ids in the publish responses to print".into()),
                }
                return Ok(None);
            }
            let mut json = summary.json();
            json["seconds"] = took.into();
            json["per_second"] = (summary.ok as f64 / took).into();
            report.set("published", json);
            report.line(
                "published",
                format!(
                    "{} in {took:.2}s ({:.0}/s, not timed)",
                    summary.text(),
                    summary.ok as f64 / took
                ),
            );
            (first, last, summary.ok)
        }
    };

    let last_event_id = match (&args.last_event_id, first_id) {
        (Some(given), _) => Some(given.clone()),
        (None, Some(first)) => Some(first.saturating_sub(1).to_string()),
        (None, None) => None,
    };
    let spec = StreamSpec::new(
        subscribe,
        args.subscribe_token.as_deref(),
        1,
        args.connect_timeout,
    );
    eprintln!(
        "replay: subscribing to {} with Last-Event-ID {}",
        redact(&args.subscribe_url),
        last_event_id.as_deref().unwrap_or("(none)")
    );
    let started = Instant::now();
    let mut conn = spec
        .open(0, last_event_id.as_deref().map(str::as_bytes))
        .await
        .map_err(|e| format!("subscribing: {}", e.label()))?;
    let head_after = started.elapsed();
    let mut parser = SseParser::new();
    // A backlog published by an earlier run (--first-id) is all older.
    let not_before = if args.first_id.is_some() { 0 } else { run_start };
    let mut tracker = Tracker::new(backlog, not_before);
    let mut first_event_after = None;
    let end = pump(
        &mut conn,
        &mut parser,
        tokio::time::sleep(args.timeout),
        &mut |event, now, hist| {
            if tracker.record(event, now, hist).is_none() {
                return true;
            }
            first_event_after.get_or_insert_with(|| started.elapsed());
            let unique = tracker.received - tracker.duplicates;
            let reached_last = matches!((event.id_num, last_id), (Some(id), Some(last)) if id >= last);
            !(unique >= expected || reached_last)
        },
    )
    .await;
    let took = started.elapsed();
    conn.abort();

    let unique = tracker.received - tracker.duplicates;
    let outcome = match end {
        End::Done => "complete",
        End::Stopped => "timed out",
        End::Closed => "stream closed",
        End::Error => "stream error",
    };
    report.set("subscribe_url", redact(&args.subscribe_url));
    report.line("target", redact(&args.subscribe_url));
    report.set("first_id", first_id);
    report.set("last_id", last_id);
    report.set("last_event_id_sent", last_event_id.clone());
    report.line(
        "backlog",
        format!(
            "{expected} events, ids {}..={} (sent Last-Event-ID {})",
            first_id.map_or("?".into(), |i| i.to_string()),
            last_id.map_or("?".into(), |i| i.to_string()),
            last_event_id.as_deref().unwrap_or("none")
        ),
    );
    report.set(
        "replay",
        serde_json::json!({
            "outcome": outcome,
            "expected": expected,
            "received": tracker.received,
            "unique": unique,
            "received_percent": percent(unique, expected),
            "duplicates": tracker.duplicates,
            "out_of_order_ids": tracker.out_of_order,
            "seq_behind_earlier_seq": tracker.reordered,
            "resets": tracker.resets,
            "response_head_ms": head_after.as_secs_f64() * 1000.0,
            "first_event_ms": first_event_after.map(|d| d.as_secs_f64() * 1000.0),
            "time_to_live_seconds": secs(took),
            "events_per_second": unique as f64 / secs(took),
        }),
    );
    report.line(
        "replayed",
        format!(
            "{unique} of {expected} ({:.3}%), {} duplicates, {} ids out of order, {} connection:reset — {outcome}",
            percent(unique, expected),
            tracker.duplicates,
            tracker.out_of_order,
            tracker.resets
        ),
    );
    report.line(
        "time to live",
        format!(
            "{:.3}s ({:.0} events/s; response head {:.1} ms, first event {})",
            secs(took),
            unique as f64 / secs(took),
            head_after.as_secs_f64() * 1000.0,
            first_event_after.map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
        ),
    );
    if end != End::Done {
        report.fail(format!("the backlog was not fully replayed: {outcome}"));
    }
    Ok(Some(report))
}
