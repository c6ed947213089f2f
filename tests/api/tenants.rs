//! Tenants (CONTRACT §4): a token's `tenant` claim scopes every topic it
//! names. No selector, history read, room join or personal topic reaches
//! another tenant's events, and tokens without a tenant see none of them.

use std::time::Duration;

use pollcast::auth::{expiry_in, Claims};
use serde_json::{json, Value};

use crate::helpers::{data, Backend, SseClient, TestApp};
use crate::on_both_stores;

fn tenant_token(app: &TestApp, tenant: Option<&str>, sub: &str) -> String {
    let everything: Vec<String> = ["*:*", "*:*:*"].iter().map(|s| s.to_string()).collect();
    app.keys.mint(&Claims {
        sub: Some(sub.into()),
        exp: expiry_in(Duration::from_secs(600)),
        publish: everything.clone(),
        subscribe: everything,
        tenant: tenant.map(str::to_string),
        ..Claims::default()
    })
}

async fn publish(app: &TestApp, token: &str, topic: &str, who: &str) -> Value {
    let response = app
        .publish_raw(
            token,
            topic,
            json!({"type": "order:placed", "payload": {"by": who}}),
        )
        .await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// The `payload.by` of every stored event a stream delivers within a moment.
async fn seen_by(stream: &mut SseClient) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    while let Some(event) = stream.next_within(Duration::from_millis(500)).await {
        let envelope = data(&event);
        if let Some(by) = envelope["payload"]["by"].as_str() {
            seen.push((envelope["topic"].as_str().unwrap().to_string(), by.to_string()));
        }
    }
    seen
}

async fn history(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    app.history_with(token, query)
        .await
        .iter()
        .map(|e| e["payload"]["by"].as_str().unwrap_or("?").to_string())
        .collect()
}

async fn tenants_never_see_each_other(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = tenant_token(&app, Some("acme"), "ann");
    let globex = tenant_token(&app, Some("globex"), "ann");
    let plain = tenant_token(&app, None, "ann");
    let mut acme_stream = app.subscribe_with(&acme, &["*:*", "*:*:*"], None).await;
    let mut globex_stream = app.subscribe_with(&globex, &["orders:1"], None).await;
    let mut plain_stream = app.subscribe_with(&plain, &["*:*", "*:*:*"], None).await;

    // The same topic name in three namespaces; clients see their own names.
    let placed = publish(&app, &acme, "orders:1", "acme").await;
    assert_eq!(placed["topic"], "orders:1");
    publish(&app, &globex, "orders:1", "globex").await;
    publish(&app, &plain, "orders:1", "plain").await;
    // Personal topics are per tenant too.
    publish(&app, &globex, "user:ann", "globex-note").await;
    publish(&app, &acme, "user:ann", "acme-note").await;

    let acme_saw = seen_by(&mut acme_stream).await;
    assert_eq!(
        acme_saw,
        [
            ("orders:1".into(), "acme".into()),
            ("user:ann".into(), "acme-note".into())
        ]
    );
    let globex_saw = seen_by(&mut globex_stream).await;
    assert_eq!(
        globex_saw,
        [
            ("orders:1".into(), "globex".into()),
            ("user:ann".into(), "globex-note".into())
        ]
    );
    assert_eq!(
        seen_by(&mut plain_stream).await,
        [("orders:1".to_string(), "plain".to_string())]
    );

    // History and replay: the same isolation.
    assert_eq!(
        history(&app, &acme, "topic=*:*&after=0").await,
        ["acme", "acme-note"]
    );
    assert_eq!(history(&app, &plain, "topic=*:*&after=0").await, ["plain"]);
    assert_eq!(history(&app, &globex, "topic=orders:1&after=0").await, ["globex"]);
    let mut replay = app.subscribe_with(&globex, &["*:*"], Some("0")).await;
    let replayed = seen_by(&mut replay).await;
    assert_eq!(
        replayed.iter().map(|(_, by)| by.as_str()).collect::<Vec<_>>(),
        ["globex", "globex-note"]
    );

    // Versions live in the tenant's namespace as well.
    for token in [&acme, &globex] {
        let body = json!({"type": "doc:created", "entityId": "d1", "expectedVersion": 0, "payload": {}});
        assert_eq!(app.publish_raw(token, "docs:1", body).await.status(), 201);
    }
}
on_both_stores!(isolation, tenants_never_see_each_other);

async fn rooms_and_tokens_stay_within_their_tenant(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = tenant_token(&app, Some("acme"), "ann");
    let globex = tenant_token(&app, Some("globex"), "ann");
    let mut stream = app.subscribe_with(&acme, &["orders:1"], None).await;
    let hello = stream.next().await;
    let connection = data(&hello)["payload"]["connectionId"]
        .as_str()
        .unwrap()
        .to_string();
    let join = |token: &str, topic: &str| {
        app.http
            .post(app.url(&format!("/v1/connections/{connection}/topics")))
            .bearer_auth(token)
            .json(&json!({ "topic": topic }))
            .send()
    };
    // Another tenant's token, even with the same sub, does not own the stream.
    assert_eq!(join(&globex, "orders:*").await.unwrap().status(), 403);
    let joined = join(&acme, "orders:*").await.unwrap();
    assert_eq!(joined.status(), 200);
    let body: Value = joined.json().await.unwrap();
    assert!(
        body["topics"].as_array().unwrap().contains(&json!("orders:*")),
        "{body}"
    );
    let notice = stream.next().await;
    assert_eq!(data(&notice)["payload"]["topic"], "orders:*");
    publish(&app, &globex, "orders:2", "globex").await;
    publish(&app, &acme, "orders:2", "acme").await;
    assert_eq!(
        seen_by(&mut stream).await,
        [("orders:2".to_string(), "acme".to_string())]
    );

    // A malformed tenant is an invalid token; no one can write the mark.
    let bad = tenant_token(&app, Some("Acme Corp"), "ann");
    let refused = app
        .http
        .get(app.url("/v1/events?topic=orders:1"))
        .bearer_auth(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let marked = app
        .http
        .get(app.url("/v1/events?topic=~acme:orders:1"))
        .bearer_auth(&globex)
        .send()
        .await
        .unwrap();
    assert_eq!(marked.status(), 400);
}
on_both_stores!(tenant_rooms, rooms_and_tokens_stay_within_their_tenant);
