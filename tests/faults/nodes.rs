//! Several nodes on one Postgres behave as one: every subscriber on every
//! node sees the same events in the same order, and a retried publish with
//! the same Idempotency-Key happens once whichever node gets it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Mutex;

use crate::harness::{http, publish, strictly_increasing, token, Database, Follower, Node};

const NODES: usize = 3;
const WRITERS_PER_NODE: usize = 6;
const EVENTS_PER_WRITER: usize = 1_200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_with_writers_on_all_deliver_one_order_everywhere() {
    let db = Database::create();
    let mut nodes = Vec::new();
    for _ in 0..NODES {
        nodes.push(Node::start(&db.url, &["--subscriber-buffer", "65536"]).await);
    }
    let topics = "topic=fault:a&topic=fault:b";
    let mut followers = Vec::new();
    for node in &nodes {
        for query in [topics, "topic=fault:*"] {
            let url = node.url(&format!("/v1/events?{query}&access_token={}", token()));
            followers.push(Follower::open(vec![url]).await);
        }
    }
    let total = NODES * WRITERS_PER_NODE * EVENTS_PER_WRITER;
    // Subscribers read while the writers write.
    let readers: Vec<_> = followers
        .into_iter()
        .map(|mut follower| {
            tokio::spawn(async move {
                let complete = follower
                    .read_until(Duration::from_secs(300), |seen| seen.len() >= total)
                    .await;
                (complete, follower)
            })
        })
        .collect();
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for w in 0..WRITERS_PER_NODE {
            let url = node.url("");
            let acknowledged = Arc::clone(&acknowledged);
            writers.push(tokio::spawn(async move {
                let http = http();
                let topic = if w % 2 == 0 { "fault:a" } else { "fault:b" };
                for i in 0..EVENTS_PER_WRITER {
                    let body =
                        json!({ "type": "fault:wrote", "payload": { "node": n, "writer": w, "i": i } });
                    let id = publish(&http, &url, topic, &body).await.expect("acknowledged");
                    acknowledged.lock().await.insert(id);
                }
            }));
        }
    }
    let started = std::time::Instant::now();
    for writer in writers {
        writer.await.unwrap();
    }
    eprintln!(
        "{total} events published through {NODES} nodes in {:?}",
        started.elapsed()
    );
    let acknowledged: Vec<i64> = acknowledged.lock().await.iter().copied().collect();
    assert_eq!(acknowledged.len(), total, "every publish got its own id");
    let in_table: i64 = db
        .query("SELECT count(*) FROM events WHERE topic LIKE 'fault:%'")
        .parse()
        .unwrap();
    assert_eq!(in_table as usize, total);

    let mut followers = Vec::new();
    for (i, reader) in readers.into_iter().enumerate() {
        let (complete, follower) = reader.await.unwrap();
        assert!(complete, "subscriber {i} saw {} of {total}", follower.seen.len());
        assert!(
            strictly_increasing(&follower.seen),
            "subscriber {i}: ids out of order or repeated"
        );
        let ids: Vec<i64> = follower.seen.iter().map(|s| s.id).collect();
        assert_eq!(
            ids, acknowledged,
            "subscriber {i} saw exactly the acknowledged events"
        );
        assert_eq!(follower.reconnects, 0, "subscriber {i} was never dropped");
        followers.push(follower);
    }
    // Each writer's events arrive in the order it wrote them.
    let first = &followers[0].seen;
    for n in 0..NODES {
        for w in 0..WRITERS_PER_NODE {
            let order: Vec<u64> = first
                .iter()
                .filter(|s| s.data["payload"]["node"] == n && s.data["payload"]["writer"] == w)
                .map(|s| s.data["payload"]["i"].as_u64().unwrap())
                .collect();
            assert_eq!(order, (0..EVENTS_PER_WRITER as u64).collect::<Vec<_>>());
        }
    }
}

#[tokio::test]
async fn an_idempotency_key_holds_across_nodes() {
    let db = Database::create();
    let first = Node::start(&db.url, &[]).await;
    let second = Node::start(&db.url, &[]).await;
    let http = http();
    let body = json!({ "type": "fault:paid", "payload": { "amount": 10 } });
    let mut answers = Vec::new();
    for node in [&first, &second, &first] {
        let response = http
            .post(node.url("/v1/topics/fault:orders/events"))
            .bearer_auth(token())
            .header("Idempotency-Key", "order-17")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        answers.push(response.json::<serde_json::Value>().await.unwrap()["id"].clone());
    }
    assert!(answers.iter().all(|id| *id == answers[0]), "{answers:?}");
    assert_eq!(
        db.query("SELECT count(*) FROM events WHERE topic = 'fault:orders'"),
        "1"
    );
    // The same key with another body is a conflict, on any node.
    let other = http
        .post(second.url("/v1/topics/fault:orders/events"))
        .bearer_auth(token())
        .header("Idempotency-Key", "order-17")
        .json(&json!({ "type": "fault:paid", "payload": { "amount": 99 } }))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 409);
    assert_eq!(
        db.query("SELECT count(*) FROM events WHERE topic = 'fault:orders'"),
        "1"
    );
}

#[tokio::test]
async fn the_vote_rate_limit_holds_for_the_cluster_not_per_node() {
    let db = Database::create();
    let flags = ["--vote-rate", "4", "--presence-ttl", "1500ms"];
    let first = Node::start(&db.url, &flags).await;
    let second = Node::start(&db.url, &flags).await;
    // Both nodes have seen each other's heartbeat (every TTL / 3): both
    // rows are live, then each node has swept again since, and that sweep
    // counted both. A fixed wait was not enough on a loaded machine.
    both_nodes_counted(&db).await;
    let http = http();
    let post = |url: String, bearer: Option<String>, body: serde_json::Value| {
        let http = http.clone();
        async move {
            let mut request = http.post(url).json(&body);
            if let Some(token) = bearer {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (_, session) = post(first.url("/v1/sessions"), None, json!({ "title": "Limits" })).await;
    let (id, slug) = (
        session["sessionId"].as_str().unwrap(),
        session["slug"].as_str().unwrap(),
    );
    let presenter = session["presenterToken"].as_str().map(str::to_owned);
    post(
        first.url(&format!("/v1/sessions/{id}/start")),
        presenter.clone(),
        json!({}),
    )
    .await;
    let (_, poll) = post(
        first.url(&format!("/v1/sessions/{id}/polls")),
        presenter.clone(),
        json!({ "question": "?", "pollType": "multiple_choice", "options": ["A", "B"] }),
    )
    .await;
    let poll_id = poll["pollId"].as_str().unwrap();
    post(
        first.url(&format!("/v1/polls/{poll_id}/activate")),
        presenter,
        json!({}),
    )
    .await;
    let (_, joined) = post(
        first.url(&format!("/v1/sessions/{slug}/participants")),
        None,
        json!({}),
    )
    .await;
    let voter = joined["participantToken"].as_str().map(str::to_owned);
    let option = poll["options"][0]["optionId"].as_str().unwrap();

    // Twelve votes at once, alternating nodes as a round-robin balancer would.
    let mut statuses = Vec::new();
    for n in 0..12 {
        let node = if n % 2 == 0 { &first } else { &second };
        let url = node.url(&format!("/v1/polls/{poll_id}/votes"));
        let (status, _) = post(
            url,
            voter.clone(),
            json!({ "voteData": { "selectedOptionIds": [option] } }),
        )
        .await;
        statuses.push(status);
    }
    let let_through = statuses.iter().filter(|s| **s != 429).count();
    assert!(
        let_through <= 4,
        "the cluster let {let_through} votes through at a rate of 4/s: {statuses:?}"
    );
    assert!(statuses.contains(&201), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

/// Waits until each node has run a heartbeat sweep while both nodes' rows
/// were live (a sweep writes its node's `last_seen` and counts the live
/// rows in one transaction).
async fn both_nodes_counted(db: &Database) {
    let live = "SELECT count(*) FROM nodes WHERE last_seen > now() - interval '1500 milliseconds'";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while db.query(live).trim() != "2" {
        assert!(
            std::time::Instant::now() < deadline,
            "the two nodes never both heartbeated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = |db: &Database| db.query("SELECT node_id || ' ' || last_seen FROM nodes ORDER BY node_id");
    let both_live_at = seen(db);
    loop {
        let now = seen(db);
        let advanced = now
            .lines()
            .zip(both_live_at.lines())
            .all(|(after, before)| after != before);
        if advanced && now.lines().count() == 2 {
            // The node reads its sweep's count just after the commit.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes stopped heartbeating"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
