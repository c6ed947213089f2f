//! `ingest`: pollcast's vote path. Untimed setup: a session (started), a
//! multiple-choice poll with 4 options (activated), and `--participants`
//! joined participants. Timed: `--concurrency` clients, each taking the
//! next participant and POSTing its one vote, as fast as the server
//! answers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::header::HeaderValue;

use crate::client::{expect_json, json_str, Client};
use crate::util::{latency_json, latency_text, new_histogram, secs, MachineCpu, Target};
use crate::{IngestArgs, Report};

/// What one voting client saw.
struct Tally {
    latencies: Histogram<u64>,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
}

pub async fn run(args: IngestArgs) -> Result<Option<Report>, String> {
    let base = Target::parse(&args.url).await?;
    let client = Arc::new(Client::new(base.with_path("/"), args.timeout)?);
    crate::util::ensure_nofile(args.concurrency.max(args.join_concurrency.unwrap_or(0)) + 100);

    // The session, started, and its poll, active.
    let mut create = client.request(
        Some("/v1/sessions"),
        None,
        Some(Bytes::from_static(br#"{"title":"pollcast-bench ingest"}"#)),
    );
    if let Some(key) = &args.admin_key {
        let value = HeaderValue::from_str(key).map_err(|e| format!("--admin-key: {e}"))?;
        create.headers_mut().insert("x-admin-key", value);
    }
    let session = expect_json("create session", client.send(|| create).await, &[201])?;
    let session_id = json_str(&session, "/sessionId")?;
    let presenter = json_str(&session, "/presenterToken")?;
    let start_path = format!("/v1/sessions/{session_id}/start");
    expect_json(
        "start session",
        client
            .send(|| client.request(Some(&start_path), Some(&presenter), None))
            .await,
        &[200],
    )?;
    let polls_path = format!("/v1/sessions/{session_id}/polls");
    let poll_body = Bytes::from_static(
        br#"{"question":"Which one?","pollType":"multiple_choice","options":["A","B","C","D"]}"#,
    );
    let poll = expect_json(
        "create poll",
        client
            .send(|| client.request(Some(&polls_path), Some(&presenter), Some(poll_body)))
            .await,
        &[201],
    )?;
    let poll_id = json_str(&poll, "/pollId")?;
    let options: Vec<String> = poll["options"]
        .as_array()
        .map(|options| {
            options
                .iter()
                .filter_map(|o| o["optionId"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if options.is_empty() {
        return Err(format!("the poll has no options: {poll}"));
    }
    let activate_path = format!("/v1/polls/{poll_id}/activate");
    expect_json(
        "activate poll",
        client
            .send(|| client.request(Some(&activate_path), Some(&presenter), None))
            .await,
        &[200],
    )?;

    // Participants (not timed).
    let join_concurrency = args.join_concurrency.unwrap_or(args.concurrency).max(1);
    eprintln!(
        "ingest: session {session_id}, poll {poll_id}; joining {} participants, {join_concurrency} at a time",
        args.participants
    );
    let join_started = Instant::now();
    let (tokens, join_failures) = join_all(&client, &session_id, args.participants, join_concurrency).await;
    let join_took = join_started.elapsed();
    eprintln!(
        "ingest: {} joined in {:.1}s ({} failed)",
        tokens.len(),
        secs(join_took),
        join_failures.values().sum::<u64>()
    );
    if tokens.is_empty() {
        return Err(format!("no participant could join: {join_failures:?}"));
    }

    // Votes (timed).
    let tokens = Arc::new(tokens);
    let vote_path = Arc::new(format!("/v1/polls/{poll_id}/votes"));
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        options
            .iter()
            .map(|id| Bytes::from(format!(r#"{{"voteData":{{"selectedOptionIds":["{id}"]}}}}"#)))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    eprintln!("ingest: voting with {} clients", args.concurrency);
    let cpu_before = MachineCpu::now();
    let started = Instant::now();
    let deadline = args.duration.map(|d| started + d);
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let (client, tokens, vote_path, bodies, next) = (
                Arc::clone(&client),
                Arc::clone(&tokens),
                Arc::clone(&vote_path),
                Arc::clone(&bodies),
                Arc::clone(&next),
            );
            tokio::spawn(async move {
                let mut tally = Tally {
                    latencies: new_histogram(),
                    statuses: BTreeMap::new(),
                    errors: BTreeMap::new(),
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= tokens.len() || deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let body = bodies[i % bodies.len()].clone();
                    let sent = Instant::now();
                    let reply = client
                        .send(|| client.request(Some(&vote_path), Some(&tokens[i]), Some(body)))
                        .await;
                    tally
                        .latencies
                        .saturating_record(sent.elapsed().as_micros() as u64);
                    match reply {
                        Ok(reply) => *tally.statuses.entry(reply.status).or_default() += 1,
                        Err(error) => *tally.errors.entry(error).or_default() += 1,
                    }
                }
                tally
            })
        })
        .collect();
    let mut latencies = new_histogram();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for worker in workers {
        let tally = worker.await.map_err(|e| format!("a voting client failed: {e}"))?;
        latencies.add(&tally.latencies).map_err(|e| e.to_string())?;
        for (status, n) in tally.statuses {
            *statuses.entry(status).or_default() += n;
        }
        for (error, n) in tally.errors {
            *errors.entry(error).or_default() += n;
        }
    }
    let took = started.elapsed();
    let cpu_after = MachineCpu::now();
    let accepted = statuses.get(&201).copied().unwrap_or(0);
    let attempted = statuses.values().sum::<u64>() + errors.values().sum::<u64>();

    // What the server counted.
    let results_path = format!("/v1/polls/{poll_id}/results");
    let server_count = client
        .send(|| client.get(&results_path, Some(&presenter)))
        .await
        .ok()
        .and_then(|reply| serde_json::from_slice::<serde_json::Value>(&reply.body).ok())
        .and_then(|results| results["currentVoteCount"].as_u64());

    let mut report = Report::new("ingest");
    report.set("url", args.url.clone());
    report.set("session_id", session_id.clone());
    report.set("poll_id", poll_id.clone());
    report.line(
        "target",
        format!("{} (session {session_id}, poll {poll_id})", args.url),
    );
    report.set(
        "participants",
        serde_json::json!({
            "joined": tokens.len(),
            "join_failures": join_failures,
            "join_seconds": secs(join_took),
            "joins_per_second": tokens.len() as f64 / secs(join_took),
        }),
    );
    report.line(
        "participants",
        format!(
            "{} joined in {:.1}s ({:.0}/s, not timed){}",
            tokens.len(),
            secs(join_took),
            tokens.len() as f64 / secs(join_took),
            if join_failures.is_empty() {
                String::new()
            } else {
                format!("; failures {join_failures:?}")
            }
        ),
    );
    let per_second = accepted as f64 / secs(took);
    report.set(
        "votes",
        serde_json::json!({
            "concurrency": args.concurrency,
            "attempted": attempted,
            "accepted_201": accepted,
            "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "errors": errors,
            "seconds": secs(took),
            "votes_per_second": per_second,
            "server_vote_count": server_count,
        }),
    );
    let mut text = format!(
        "{accepted} accepted (201) of {attempted} in {:.2}s with {} clients: {per_second:.0} votes/s; statuses {statuses:?}",
        secs(took),
        args.concurrency
    );
    if !errors.is_empty() {
        text.push_str(&format!("; errors {errors:?}"));
    }
    report.line("votes", text);
    // Everything the machine ran while voting (server, its database, this
    // tool, the kernel) per accepted vote: on a machine shared by all of
    // them this, not idle time, is what caps votes/s.
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let (core_seconds, share) = after.busy_since(&before, took);
        let per_vote_us = core_seconds * 1e6 / accepted.max(1) as f64;
        report.set(
            "machine_cpu",
            serde_json::json!({ "busy_share": share, "core_seconds": core_seconds, "us_per_vote": per_vote_us }),
        );
        report.line(
            "machine CPU",
            format!(
                "{:.0} % busy, {per_vote_us:.0} µs per vote (all processes)",
                share * 100.0
            ),
        );
    }
    report.line(
        "server vote count",
        server_count.map_or("unknown".to_string(), |n| n.to_string()),
    );
    report.set("latency", latency_json(&latencies));
    report.line("latency ms", latency_text(&latencies));
    if accepted == 0 {
        report.fail("no vote was accepted (see `votes`)");
    }
    Ok(Some(report))
}

/// Joins `n` participants, `concurrency` at a time; their tokens and the
/// failures by kind.
async fn join_all(
    client: &Arc<Client>,
    session_id: &str,
    n: usize,
    concurrency: usize,
) -> (Vec<String>, BTreeMap<String, u64>) {
    let path = Arc::new(format!("/v1/sessions/{session_id}/participants"));
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, path, next, done) = (
                Arc::clone(client),
                Arc::clone(&path),
                Arc::clone(&next),
                Arc::clone(&done),
            );
            tokio::spawn(async move {
                let mut tokens = Vec::new();
                let mut failures: BTreeMap<String, u64> = BTreeMap::new();
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let joined = expect_json(
                        "join",
                        client.send(|| client.request(Some(&path), None, None)).await,
                        &[201],
                    )
                    .and_then(|body| json_str(&body, "/participantToken"));
                    match joined {
                        Ok(token) => tokens.push(token),
                        Err(error) => {
                            let kind: String = error.chars().take(120).collect();
                            *failures.entry(kind).or_default() += 1;
                        }
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                (tokens, failures)
            })
        })
        .collect();
    let progress = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                eprintln!("ingest: {}/{n} joined…", done.load(Ordering::Relaxed));
            }
        })
    };
    let mut tokens = Vec::with_capacity(n);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for worker in workers {
        if let Ok((mut some, failed)) = worker.await {
            tokens.append(&mut some);
            for (kind, count) in failed {
                *failures.entry(kind).or_default() += count;
            }
        }
    }
    progress.abort();
    (tokens, failures)
}
