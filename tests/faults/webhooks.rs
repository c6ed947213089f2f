//! Webhooks across nodes: the node delivering a webhook is killed with
//! `kill -9` while events flow; the other node takes the lease over once
//! it expires and the receiver gets every event, in order, at least once
//! (a repeat only where the delivery changed hands).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{http, publish, Database, Node};
use crate::webhook_receiver::Receiver;

const ADMIN_KEY: &str = "fault-admin-key";
const EVENTS: usize = 300;

const FLAGS: &[&str] = &[
    "--admin-key",
    ADMIN_KEY,
    "--webhook-lease",
    "1s",
    "--webhook-timeout",
    "2s",
    "--webhook-retry-base",
    "50ms",
    "--webhook-retry-max",
    "200ms",
];

async fn webhook(node: &Node, id: &str) -> Value {
    http()
        .get(node.url(&format!("/v1/webhooks/{id}")))
        .header("X-Admin-Key", ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Reads the webhook on `node` until `done` holds (`within` at most).
async fn webhook_until(node: &Node, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let read = webhook(node, id).await;
        if done(&read) || tokio::time::Instant::now() > deadline {
            return read;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_delivering_node_hands_its_webhooks_over() {
    let db = Database::create();
    let mut first = Node::start(&db.url, FLAGS).await;
    let receiver = Receiver::start().await;
    let created: Value = http()
        .post(first.url("/v1/webhooks"))
        .header("X-Admin-Key", ADMIN_KEY)
        .json(&json!({ "url": receiver.url, "topics": ["fault:hooks"], "secret": receiver.secret }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().expect("created").to_owned();
    // Given the first node delivering it (alone, so it is the holder)...
    let held = webhook_until(&first, &id, Duration::from_secs(10), |w| {
        w["deliveringNode"].is_string()
    })
    .await;
    let holder = held["deliveringNode"].as_str().expect("a holder").to_owned();
    // ...and a second node on the same database.
    let second = Node::start(&db.url, FLAGS).await;

    // Events flow through the second node all along.
    let published = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let (url, published) = (second.url(""), Arc::clone(&published));
        tokio::spawn(async move {
            let http = http();
            for i in 0..EVENTS {
                let body = json!({ "type": "fault:hooked", "payload": { "i": i } });
                let id = publish(&http, &url, "fault:hooks", &body)
                    .await
                    .expect("published");
                published.lock().unwrap().push(id);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    assert!(
        receiver
            .wait_until(Duration::from_secs(30), |got| got.len() >= EVENTS / 4)
            .await,
        "deliveries started"
    );

    // When the delivering node dies mid-stream...
    first.kill9();
    let at_kill = published.lock().unwrap().len();
    assert!(
        at_kill < EVENTS,
        "killed mid-stream ({at_kill} of {EVENTS} published)"
    );
    publisher.await.unwrap();
    let expected = published.lock().unwrap().clone();

    // ...then the other takes over and everything arrives.
    let complete = receiver
        .wait_until(Duration::from_secs(30), |got| {
            expected.iter().all(|id| got.contains(id))
        })
        .await;
    let got = receiver.accepted();
    assert!(
        complete,
        "missing: {:?}",
        expected.iter().filter(|id| !got.contains(id)).collect::<Vec<_>>()
    );
    let after = webhook_until(&second, &id, Duration::from_secs(10), |w| w["lag"] == 0).await;
    let new_holder = after["deliveringNode"].as_str().expect("a new holder");
    assert_ne!(new_holder, holder, "the second node delivers now");
    assert_eq!(after["cursor"], expected.last().unwrap().to_string());

    // In order: the first arrivals are exactly the published order, and
    // the only step back is one at the handover, of at most one event
    // (the one in flight when the node died).
    let mut firsts = Vec::new();
    for id in &got {
        if !firsts.contains(id) {
            firsts.push(*id);
        }
    }
    assert_eq!(firsts, expected, "first arrivals in order, none skipped");
    let steps_back: Vec<(i64, i64)> = got
        .windows(2)
        .filter(|pair| pair[1] <= pair[0])
        .map(|pair| (pair[0], pair[1]))
        .collect();
    assert!(
        steps_back.len() <= 1,
        "repeats only at the handover: {steps_back:?}"
    );
    assert!(
        got.len() - expected.len() <= 1,
        "{} repeats",
        got.len() - expected.len()
    );
    assert!(receiver.attempts().iter().all(|a| a.signed));
    eprintln!(
        "{} events, {} deliveries, handover repeats: {steps_back:?}",
        expected.len(),
        got.len()
    );
}
