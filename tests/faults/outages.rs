//! Outages: a node killed with `kill -9` in the middle of a vote storm, and
//! Postgres crashing and coming back while streams are open and writes (or
//! batches of joins) arrive. What was acknowledged must survive, exactly
//! once, what was written must be whole, and readers must end up with every
//! event without a gap.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::harness::{
    collect_frames, http, strictly_increasing, system_token, token, Database, Follower, Node, PrivatePostgres,
};

const PARTICIPANTS: usize = 200;

async fn post(
    http: &reqwest::Client,
    url: String,
    bearer: Option<&str>,
    body: Value,
) -> Result<(u16, Value), String> {
    let mut request = http.post(url).json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn ok(http: &reqwest::Client, url: String, bearer: Option<&str>, body: Value) -> Value {
    let (status, body) = post(http, url.clone(), bearer, body).await.unwrap();
    assert!((200..300).contains(&status), "{url}: {status} {body}");
    body
}

/// What one participant's vote came to.
#[derive(Debug, Clone)]
enum Outcome {
    Accepted(String),
    Refused(u16, Value),
    /// The node died before answering: the vote may or may not be in.
    NoAnswer,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_during_a_vote_storm_loses_no_acknowledged_vote() {
    let db = Database::create();
    let flags = [
        "--vote-rate",
        "1000",
        "--presence-ttl",
        "2s",
        "--grace-period",
        "200ms",
    ];
    let mut doomed = Node::start(&db.url, &flags).await;
    let survivor = Node::start(&db.url, &flags).await;
    let (a, b) = (doomed.url(""), survivor.url(""));
    let http = http();

    let session = ok(
        &http,
        format!("{a}/v1/sessions"),
        None,
        json!({ "title": "Storm" }),
    )
    .await;
    let (id, slug) = (
        session["sessionId"].as_str().unwrap(),
        session["slug"].as_str().unwrap(),
    );
    let presenter = session["presenterToken"].as_str().unwrap().to_owned();
    ok(
        &http,
        format!("{a}/v1/sessions/{id}/start"),
        Some(&presenter),
        json!({}),
    )
    .await;
    let poll = ok(
        &http,
        format!("{b}/v1/sessions/{id}/polls"),
        Some(&presenter),
        json!({ "question": "Pick", "pollType": "multiple_choice", "options": ["A", "B", "C"] }),
    )
    .await;
    let poll_id = poll["pollId"].as_str().unwrap().to_owned();
    let option = poll["options"][0]["optionId"].as_str().unwrap().to_owned();
    ok(
        &http,
        format!("{a}/v1/polls/{poll_id}/activate"),
        Some(&presenter),
        json!({}),
    )
    .await;

    let mut participants = Vec::new();
    for n in 0..PARTICIPANTS {
        let node = if n % 2 == 0 { &a } else { &b };
        let joined = ok(
            &http,
            format!("{node}/v1/sessions/{slug}/participants"),
            None,
            json!({}),
        )
        .await;
        participants.push((
            joined["participantId"].as_str().unwrap().to_owned(),
            joined["participantToken"].as_str().unwrap().to_owned(),
        ));
    }
    // Watchers of the session on both nodes; the one on the doomed node
    // moves to the survivor with Last-Event-ID when its stream breaks. Both
    // start from the same id, so they must see the same events whatever
    // is committed while they open (and the doomed one has an id to resume
    // from even if the node dies before it sees anything).
    let snapshot: serde_json::Value = http
        .get(format!("{b}/v1/sessions/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let from: i64 = snapshot["lastEventId"].as_str().unwrap().parse().unwrap();
    let watch = |node: &str| format!("{node}/v1/sessions/{id}/events");
    let mut on_doomed = Follower::open_after(vec![watch(&a), watch(&b)], Some(from)).await;
    let mut on_survivor = Follower::open_after(vec![watch(&b)], Some(from)).await;
    // One participant present through each node.
    let present = |n: usize, node: &str| {
        format!(
            "{node}/v1/sessions/{id}/events?access_token={}",
            participants[n].1
        )
    };
    let _present_on_doomed = Follower::open(vec![present(0, &a)]).await;
    let _present_on_survivor = Follower::open(vec![present(1, &b)]).await;

    // The storm: everyone votes at once, half through each node; the doomed
    // node is killed once 50 votes have been answered.
    let answered = Arc::new(AtomicUsize::new(0));
    let outcomes = Arc::new(Mutex::new(HashMap::new()));
    let mut voters = Vec::new();
    for (n, (participant, token)) in participants.iter().cloned().enumerate() {
        let node = if n % 2 == 0 { a.clone() } else { b.clone() };
        let url = format!("{node}/v1/polls/{poll_id}/votes");
        let body = json!({ "voteData": { "selectedOptionIds": [option] } });
        let (http, answered, outcomes) = (http.clone(), Arc::clone(&answered), Arc::clone(&outcomes));
        voters.push(tokio::spawn(async move {
            // Spread over about 400 ms, so the kill lands mid-storm.
            tokio::time::sleep(Duration::from_millis(2 * n as u64)).await;
            let outcome = match post(&http, url, Some(&token), body).await {
                Ok((201, body)) => Outcome::Accepted(body["voteId"].as_str().unwrap().to_owned()),
                Ok((status, body)) => Outcome::Refused(status, body),
                Err(_) => Outcome::NoAnswer,
            };
            answered.fetch_add(1, Ordering::SeqCst);
            outcomes.lock().await.insert(participant, outcome);
        }));
    }
    while answered.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    doomed.kill9();
    for voter in voters {
        voter.await.unwrap();
    }
    let outcomes = outcomes.lock().await.clone();
    let acknowledged: HashSet<String> = outcomes
        .values()
        .filter_map(|o| match o {
            Outcome::Accepted(vote) => Some(vote.clone()),
            _ => None,
        })
        .collect();
    let unanswered = outcomes
        .values()
        .filter(|o| matches!(o, Outcome::NoAnswer))
        .count();
    for outcome in outcomes.values() {
        if let Outcome::Refused(status, body) = outcome {
            panic!("a vote was refused during the storm: {status} {body}");
        }
    }
    eprintln!(
        "storm: {} acknowledged, {unanswered} unanswered when the node died",
        acknowledged.len()
    );
    assert!(unanswered > 0, "the node died while votes were in flight");

    // Every acknowledged vote is in the database, once, with its event to
    // the voter (the session's broadcasts name no voter).
    for vote in &acknowledged {
        let rows = db.query(&format!(
            "SELECT (SELECT count(*) FROM votes WHERE id = '{vote}'), \
                    (SELECT count(*) FROM events WHERE type = 'vote:accepted' AND payload->>'voteId' = '{vote}' \
                     AND payload->>'participantId' IS NOT NULL)"
        ));
        assert_eq!(rows, "1|1", "vote {vote}: rows in votes|events");
    }
    // Unanswered voters retry on the survivor: accepted now, or told that
    // their first try made it.
    for (participant, token) in &participants {
        if !matches!(outcomes[participant], Outcome::NoAnswer) {
            continue;
        }
        let body = json!({ "voteData": { "selectedOptionIds": [option] } });
        let (status, answer) = post(&http, format!("{b}/v1/polls/{poll_id}/votes"), Some(token), body)
            .await
            .unwrap();
        assert!(
            status == 201 || (status == 409 && answer["error"]["code"] == "duplicate_vote"),
            "retry: {status} {answer}"
        );
    }
    let votes: usize = db
        .query(&format!("SELECT count(*) FROM votes WHERE poll_id = '{poll_id}'"))
        .parse()
        .unwrap();
    assert_eq!(
        votes, PARTICIPANTS,
        "one vote per participant, none lost, none doubled"
    );

    ok(
        &http,
        format!("{b}/v1/polls/{poll_id}/close"),
        Some(&presenter),
        json!({}),
    )
    .await;
    let is_closed = |seen: &[crate::harness::Seen]| seen.iter().any(|s| s.event == "poll:closed");
    assert!(on_survivor.read_until(Duration::from_secs(20), is_closed).await);
    assert!(
        on_doomed.read_until(Duration::from_secs(20), is_closed).await,
        "the doomed node's watcher never saw poll:closed: {} reconnects, last id {:?}, survivor's last id {:?}",
        on_doomed.reconnects,
        on_doomed.last_id(),
        on_survivor.last_id()
    );
    assert!(on_doomed.reconnects >= 1, "the doomed node's watcher moved");
    assert_eq!(on_doomed.resets, 0, "its Last-Event-ID was honoured, not reset");
    let through = |f: &Follower| {
        let end = f.seen.iter().position(|s| s.event == "poll:closed").unwrap();
        f.seen[..=end].iter().map(|s| s.id).collect::<Vec<_>>()
    };
    assert!(strictly_increasing(&on_doomed.seen));
    assert_eq!(
        through(&on_doomed),
        through(&on_survivor),
        "both watchers saw the same events"
    );
    let final_count = on_survivor
        .seen
        .iter()
        .find(|s| s.event == "poll:closed")
        .unwrap()
        .data["payload"]["finalVoteCount"]
        .clone();
    assert_eq!(final_count, PARTICIPANTS);
    // Broadcast totals never go backwards and never pass the truth.
    let counts: Vec<u64> = on_survivor
        .seen
        .iter()
        .filter(|s| s.event == "vote:accepted")
        .filter_map(|s| s.data["payload"]["currentVoteCount"].as_u64())
        .collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    assert!(counts.iter().all(|c| *c as usize <= PARTICIPANTS));

    // The participant whose stream was on the dead node is reported gone
    // once the node's presence rows expire.
    let gone = participants[0].0.clone();
    let left = on_survivor
        .read_until(Duration::from_secs(15), |seen| {
            seen.iter()
                .any(|s| s.event == "participant:disconnected" && s.data["payload"]["participantId"] == gone)
        })
        .await;
    assert!(left, "the dead node's participant was never reported gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_crashing_and_returning_loses_nothing_acknowledged() {
    let pg = PrivatePostgres::start();
    crate::harness::psql(&pg.url("postgres"), "CREATE DATABASE pollcast");
    let db_url = pg.url("pollcast");
    let node = Node::start(&db_url, &["--tail-poll", "200ms", "--status-interval", "300ms"]).await;
    let base = node.url("");
    let stream_url = node.url(&format!("/v1/events?topic=fault:log&access_token={}", token()));
    let mut reader = Follower::open(vec![stream_url]).await;
    // An operator watching the node's system topic.
    let alerts = collect_frames(
        node.url(&format!(
            "/v1/events?topic=system&access_token={}",
            system_token()
        )),
        "system:alert",
    );

    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let unavailable = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (acknowledged, unavailable, stop) = (
            Arc::clone(&acknowledged),
            Arc::clone(&unavailable),
            Arc::clone(&stop),
        );
        let base = base.clone();
        tokio::spawn(async move {
            let http = http();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let response = http
                    .post(format!("{base}/v1/topics/fault:log/events"))
                    .bearer_auth(token())
                    .json(&json!({ "type": "fault:line", "payload": { "n": n } }))
                    .send()
                    .await
                    .expect("the node itself stays up");
                match response.status().as_u16() {
                    201 => {
                        let body: Value = response.json().await.unwrap();
                        acknowledged
                            .lock()
                            .await
                            .push(body["id"].as_str().unwrap().parse::<i64>().unwrap());
                    }
                    503 => {
                        let retry_after = response.headers().get("retry-after").cloned();
                        let body: Value = response.json().await.unwrap();
                        assert_eq!(body["error"]["code"], "unavailable", "{body}");
                        unavailable.lock().await.push(retry_after);
                    }
                    other => panic!(
                        "unexpected {other}: {}",
                        response.text().await.unwrap_or_default()
                    ),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = acknowledged.lock().await.len();
    pg.crash();
    let crashed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.up();
    eprintln!("Postgres down for {:?}", crashed_at.elapsed());
    // Writes succeed again within seconds of its return.
    let back = Instant::now();
    let returned = loop {
        let now = acknowledged.lock().await.len();
        if now > before + 20 && !unavailable.lock().await.is_empty() {
            break true;
        }
        if back.elapsed() > Duration::from_secs(20) {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    assert!(returned, "writes did not resume (acknowledged {before} before)");
    let refusals = unavailable.lock().await.clone();
    assert!(!refusals.is_empty(), "writes during the outage were refused");
    assert!(
        refusals.iter().all(|r| r.is_some()),
        "every 503 carries Retry-After"
    );
    eprintln!("{} writes refused with 503 during the outage", refusals.len());

    let acknowledged = acknowledged.lock().await.clone();
    let last = *acknowledged.last().unwrap();
    let in_table: HashSet<i64> =
        crate::harness::psql(&db_url, "SELECT id FROM events WHERE topic = 'fault:log'")
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
    for id in &acknowledged {
        assert!(in_table.contains(id), "acknowledged event {id} is gone");
    }
    assert!(
        reader
            .read_until(Duration::from_secs(20), |seen| seen
                .last()
                .is_some_and(|s| s.id >= last))
            .await,
        "the reader caught up ({} events)",
        reader.seen.len()
    );
    assert!(strictly_increasing(&reader.seen), "no duplicates, in order");
    let mut in_order: Vec<i64> = in_table.into_iter().collect();
    in_order.sort();
    let seen: Vec<i64> = reader.seen.iter().map(|s| s.id).collect();
    assert_eq!(seen, in_order, "the reader saw every stored event, no gap");

    // The operator was told the database went away, then that it came back.
    let reasons: Vec<String> = alerts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a["payload"]["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    let lost = reasons.iter().position(|r| r == "database_unreachable");
    let regained = reasons.iter().rposition(|r| r == "database_recovered");
    assert!(
        matches!((lost, regained), (Some(l), Some(r)) if l < r),
        "system:alert frames seen: {reasons:?}"
    );
}

/// What the joining clients were told while Postgres went away and came
/// back.
#[derive(Default)]
struct JoinAnswers {
    /// The participant ids of the joins answered 201.
    joined: Vec<String>,
    /// How many joins were answered 503.
    unavailable: usize,
}

/// A room keeps joining (in batches: no Idempotency-Key) while Postgres
/// crashes and returns. Every join answered 201 is stored; every stored
/// participant has its `participant:joined` event and is counted in the
/// session's present count: a batch is written whole or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_during_a_postgres_crash_are_written_whole_or_not_at_all() {
    let pg = PrivatePostgres::start();
    crate::harness::psql(&pg.url("postgres"), "CREATE DATABASE pollcast");
    let db_url = pg.url("pollcast");
    let node = Node::start(&db_url, &["--tail-poll", "200ms"]).await;
    let base = node.url("");
    let http = http();
    let session = ok(
        &http,
        format!("{base}/v1/sessions"),
        None,
        json!({ "title": "Door" }),
    )
    .await;
    let (id, slug) = (
        session["sessionId"].as_str().unwrap().to_owned(),
        session["slug"].as_str().unwrap().to_owned(),
    );
    let presenter = session["presenterToken"].as_str().unwrap();
    ok(
        &http,
        format!("{base}/v1/sessions/{id}/start"),
        Some(presenter),
        json!({}),
    )
    .await;

    let answers = Arc::new(Mutex::new(JoinAnswers::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let doors: Vec<_> = (0..16)
        .map(|_| {
            let (answers, stop, http) = (Arc::clone(&answers), Arc::clone(&stop), http.clone());
            let url = format!("{base}/v1/sessions/{slug}/participants");
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let (status, body) = post(&http, url.clone(), None, json!({}))
                        .await
                        .expect("the node stays up");
                    match status {
                        201 => answers
                            .lock()
                            .await
                            .joined
                            .push(body["participantId"].as_str().unwrap().to_owned()),
                        503 => {
                            assert_eq!(body["error"]["code"], "unavailable", "{body}");
                            answers.lock().await.unavailable += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        other => panic!("unexpected {other}: {body}"),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = answers.lock().await.joined.len();
    pg.crash();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.up();
    let back = Instant::now();
    while answers.lock().await.joined.len() < before + 200 && back.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for door in doors {
        door.await.unwrap();
    }
    let answers = answers.lock().await;
    assert!(before > 0, "joins went through before the crash");
    assert!(answers.unavailable > 0, "joins during the outage were refused");
    assert!(
        answers.joined.len() >= before + 200,
        "joins resumed after the outage"
    );

    let stored: HashSet<String> = crate::harness::psql(
        &db_url,
        &format!("SELECT id FROM participants WHERE session_id = '{id}'"),
    )
    .lines()
    .map(str::to_owned)
    .collect();
    for participant in &answers.joined {
        assert!(
            stored.contains(participant),
            "acknowledged join {participant} is gone"
        );
    }
    let announced: HashSet<String> = crate::harness::psql(
        &db_url,
        &format!(
            "SELECT payload->>'participantId' FROM events \
              WHERE topic = 'session:{id}' AND type = 'participant:joined'"
        ),
    )
    .lines()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        announced, stored,
        "each stored participant has its event, and only they"
    );
    let counted: usize = crate::harness::psql(
        &db_url,
        &format!("SELECT present_count FROM sessions WHERE id = '{id}'"),
    )
    .trim()
    .parse()
    .unwrap();
    assert_eq!(counted, stored.len(), "the present count matches the rows");
    eprintln!(
        "{} joins acknowledged, {} refused with 503, {} stored",
        answers.joined.len(),
        answers.unavailable,
        stored.len()
    );
}
