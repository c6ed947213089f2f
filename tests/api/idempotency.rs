//! `Idempotency-Key` on POST (CONTRACT §6).

use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::on_both_stores;

async fn post(app: &TestApp, key: &str, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.url("/v1/topics/demo:a/events"))
        .bearer_auth(app.demo_token())
        .header("Idempotency-Key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn a_retry_returns_the_first_response_and_appends_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = json!({"type": "demo:said", "payload": {"n": 1}});
    let (status, first) = post(&app, "key-1", body.clone()).await;
    assert_eq!(status, 201);
    let (status, again) = post(&app, "key-1", body.clone()).await;
    assert_eq!((status, &again), (201, &first));
    assert_eq!(app.history_len("topic=demo:a").await, 1);

    let (status, conflict) = post(&app, "key-1", json!({"type": "demo:said", "payload": {"n": 2}})).await;
    assert_eq!(status, 409);
    assert_eq!(conflict["error"]["code"], "conflict");
    assert_eq!(app.history_len("topic=demo:a").await, 1);

    // The same key on another topic is another request under a used key.
    let response = app
        .http
        .post(app.url("/v1/topics/demo:b/events"))
        .bearer_auth(app.demo_token())
        .header("Idempotency-Key", "key-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);

    // Concurrent retries of one key: one append, identical answers.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let http = app.http.clone();
        let url = app.url("/v1/topics/demo:a/events");
        let token = app.demo_token();
        tasks.push(tokio::spawn(async move {
            let response = http
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", "burst")
                .json(&json!({"type": "demo:said", "payload": {"burst": true}}))
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 201);
    assert_eq!(app.history_len("topic=demo:a").await, 2);

    // Keys belong to their caller: another subject's same key is a new request.
    let other = app.keys.mint(&pollcast::auth::Claims {
        sub: Some("someone-else".into()),
        exp: pollcast::auth::expiry_in(std::time::Duration::from_secs(60)),
        publish: vec!["demo:*".into()],
        subscribe: vec![],
        ..pollcast::auth::Claims::default()
    });
    let response = app
        .http
        .post(app.url("/v1/topics/demo:a/events"))
        .bearer_auth(other)
        .header("Idempotency-Key", "key-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(app.history_len("topic=demo:a").await, 3);
}
on_both_stores!(retries, a_retry_returns_the_first_response_and_appends_nothing);

#[tokio::test]
async fn malformed_keys_are_400() {
    let app = TestApp::spawn(Backend::Memory).await;
    let (status, body) = post(&app, &"k".repeat(256), json!({"type": "demo:said"})).await;
    assert_eq!(status, 400, "{body}");
}
