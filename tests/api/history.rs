//! The JSON history endpoint, with and without the long-poll `wait`.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::on_both_stores;

async fn history(app: &TestApp, query: &str) -> reqwest::Response {
    app.http
        .get(app.url(&format!("/v1/events/history?{query}")))
        .bearer_auth(app.demo_token())
        .send()
        .await
        .unwrap()
}

async fn ids_of(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body.as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

async fn history_pages_through_matching_events_in_id_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut on_a = Vec::new();
    for n in 0..7 {
        let event = app
            .publish(
                if n % 2 == 0 { "demo:a" } else { "other:b" },
                "demo:said",
                json!({"n": n}),
            )
            .await;
        if n % 2 == 0 {
            on_a.push(event);
        }
    }
    let all: Vec<String> = on_a
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids_of(history(&app, "topic=demo:a").await).await, all);
    let first_two = ids_of(history(&app, "topic=demo:a&limit=2").await).await;
    assert_eq!(first_two, all[..2]);
    let rest = ids_of(history(&app, &format!("topic=demo:a&after={}", first_two[1])).await).await;
    assert_eq!(rest, all[2..]);
    // Items are full envelopes, identical to what was published.
    let body: Value = history(&app, "topic=demo:a&limit=1").await.json().await.unwrap();
    assert_eq!(body[0], on_a[0]);
}
on_both_stores!(paging, history_pages_through_matching_events_in_id_order);

async fn a_long_poll_returns_as_soon_as_an_event_is_committed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let head = app.publish("demo:a", "demo:said", json!({})).await;
    let after = head["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let waiter = {
        let request = app
            .http
            .get(app.url(&format!("/v1/events/history?topic=demo:a&after={after}&wait=10")))
            .bearer_auth(app.demo_token());
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.publish("other:b", "demo:said", json!({})).await; // does not match: keeps waiting
    let wanted = app.publish("demo:a", "demo:said", json!({"n": "wanted"})).await;
    let got = ids_of(waiter.await.unwrap()).await;
    assert_eq!(got, vec![wanted["id"].as_str().unwrap().to_string()]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered when the event came, not at the end of the wait"
    );

    // Nothing arrives: an empty array when the wait ends.
    let started = Instant::now();
    let last = wanted["id"].as_str().unwrap();
    let empty = ids_of(history(&app, &format!("topic=demo:a&after={last}&wait=0.5")).await).await;
    assert!(empty.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(450));
}
on_both_stores!(long_poll, a_long_poll_returns_as_soon_as_an_event_is_committed);

async fn history_refuses_ids_it_cannot_serve(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.publish("demo:a", "demo:said", json!({})).await;
    let response = history(&app, "topic=demo:a&after=424242").await;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict");
}
on_both_stores!(unknown_after, history_refuses_ids_it_cannot_serve);
