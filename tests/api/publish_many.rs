//! `POST /v1/events` (#19, item 4): several events on several topics in
//! one commit with consecutive ids, each authorized as a single publish
//! is, all or none.

use serde_json::{json, Value};

use crate::helpers::{data, Backend, TestApp};
use crate::on_both_stores;

async fn publish_many(app: &TestApp, token: &str, events: Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.url("/v1/events"))
        .bearer_auth(token)
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Given a publisher of `demo:*`, when it publishes three events on two
/// topics at once, then they get consecutive ids in the order sent and a
/// stream of both topics receives them in that order.
async fn several_events_commit_together_in_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token(&["demo:*"], &["demo:*"]);
    let mut stream = app.subscribe(&["demo:orders", "demo:mail"], None).await;
    let (status, body) = publish_many(
        &app,
        &token,
        json!([
            {"topic": "demo:orders", "type": "order:paid", "payload": {"order": 7}, "entityId": "7", "expectedVersion": 0},
            {"topic": "demo:mail", "type": "mail:queued", "payload": {"to": "ann"}},
            {"topic": "demo:orders", "type": "order:shipped", "entityId": "7", "expectedVersion": 1},
        ]),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let events = body["events"].as_array().unwrap();
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, [ids[0], ids[0] + 1, ids[0] + 2], "consecutive ids");
    assert_eq!(events[2]["version"], 2, "{body}");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = stream.next_stored().await;
        seen.push((
            data(&event)["type"].as_str().unwrap().to_string(),
            event.id.clone(),
        ));
    }
    let types: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["order:paid", "mail:queued", "order:shipped"]);
    assert_eq!(seen[0].1, ids[0].to_string());
}
on_both_stores!(in_order, several_events_commit_together_in_order);

/// Given a request whose second event expects a stale version, the whole
/// request is refused (409, naming item 1) and nothing is appended, not
/// even the first event's version bump.
async fn one_conflict_refuses_them_all(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token(&["demo:*"], &["demo:*"]);
    let (status, _) = publish_many(
        &app,
        &token,
        json!([{"topic": "demo:orders", "type": "order:created", "entityId": "8", "expectedVersion": 0}]),
    )
    .await;
    assert_eq!(status, 201);
    let before = app.history_len("topic=demo:*").await;
    let (status, body) = publish_many(
        &app,
        &token,
        json!([
            {"topic": "demo:orders", "type": "order:paid", "entityId": "8", "expectedVersion": 1},
            {"topic": "demo:orders", "type": "order:paid", "entityId": "9", "expectedVersion": 4},
        ]),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["index"], 1, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("events[1]: "));
    assert_eq!(app.history_len("topic=demo:*").await, before, "nothing appended");
    // Entity 8 is still at version 1: the first item's bump was not kept.
    let (status, body) = publish_many(
        &app,
        &token,
        json!([{"topic": "demo:orders", "type": "order:paid", "entityId": "8", "expectedVersion": 1}]),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}
on_both_stores!(all_or_none, one_conflict_refuses_them_all);

/// Every item is authorized: one topic the token may not write, or a
/// reserved one, refuses the request with nothing appended; an empty or
/// oversized list is a 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_topic_is_authorized() {
    let app = TestApp::spawn(Backend::Memory).await;
    let token = app.token(&["demo:*"], &["demo:*"]);
    let before = app.history_len("topic=demo:*").await;
    let ok = json!({"topic": "demo:a", "type": "thing:done"});
    for (bad, status, what) in [
        (
            json!({"topic": "other:a", "type": "thing:done"}),
            403,
            "a topic outside the token",
        ),
        (
            json!({"topic": "session:x", "type": "thing:done"}),
            403,
            "a reserved topic",
        ),
        (
            json!({"topic": "demo:a", "type": "presence:update"}),
            422,
            "a server-only type",
        ),
        (
            json!({"topic": "no spaces", "type": "thing:done"}),
            422,
            "a bad topic",
        ),
    ] {
        let (got, body) = publish_many(&app, &token, json!([ok, bad])).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body["error"]["index"], 1, "{what}: {body}");
    }
    assert_eq!(app.history_len("topic=demo:*").await, before, "nothing appended");
    let (status, _) = publish_many(&app, &token, json!([])).await;
    assert_eq!(status, 422);
    let many: Vec<Value> = (0..101).map(|_| ok.clone()).collect();
    let (status, _) = publish_many(&app, &token, json!(many)).await;
    assert_eq!(status, 422);
}
