//! Operator endpoints and the durable store's own guarantees.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Backend, TestApp};

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let mut client = app.subscribe(&["demo:a"], None).await;
    client.next().await;
    app.publish("demo:a", "demo:said", json!({})).await;
    client.next_stored().await;
    let metrics = app.metrics().await;
    for name in [
        "pollcast_connections",
        "pollcast_events_appended_total",
        "pollcast_deliveries_total",
        "pollcast_append_batch_size_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
}

#[tokio::test]
async fn the_events_table_rejects_updates_and_deletes() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.publish("demo:a", "demo:said", json!({})).await;
    let db = app.db.as_ref().unwrap().client().await;
    for sql in [
        "UPDATE events SET type = 'demo:forged'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let error = db.batch_execute(sql).await.expect_err(sql);
        assert!(
            error.to_string().contains("append-only") || format!("{error:?}").contains("append-only"),
            "{sql}: {error:?}"
        );
    }
    let count: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    // The one maintenance path drops a prefix and records it.
    let dropped: i64 = db
        .query_one("SELECT prune_events(now() + interval '1 minute')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dropped, 1);
    let pruned: i64 = db
        .query_one("SELECT pruned_through FROM log_state", &[])
        .await
        .unwrap()
        .get(0);
    assert!(pruned >= 1);
}

/// The database goes away under a running server: writes get 503 with
/// Retry-After, readiness fails, and everything recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_503_and_the_server_recovers() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let name = app.db.as_ref().unwrap().name.clone();
    app.publish("demo:a", "demo:said", json!({"before": true})).await;
    let admin = crate::helpers::admin_client().await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();

    let mut saw_503 = false;
    for _ in 0..3 {
        let response = app
            .publish_raw(
                &app.demo_token(),
                "demo:a",
                json!({"type": "demo:said", "payload": {}}),
            )
            .await;
        if response.status() == 503 {
            assert_eq!(response.headers()["retry-after"], "1");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unavailable");
            saw_503 = true;
            break;
        }
    }
    assert!(saw_503, "publishing during the outage gives 503");
    assert_eq!(
        app.http.get(app.url("/readyz")).send().await.unwrap().status(),
        503
    );

    admin
        .batch_execute(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    let mut recovered = false;
    for _ in 0..50 {
        let response = app
            .publish_raw(
                &app.demo_token(),
                "demo:a",
                json!({"type": "demo:said", "payload": {"after": true}}),
            )
            .await;
        if response.status() == 201 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "publishing works again once the database is back");
    // And a stream sees the events from before and after.
    let mut client = app.subscribe(&["demo:a"], Some("0")).await;
    let payloads: Vec<serde_json::Value> = client
        .stored(2)
        .await
        .iter()
        .map(|e| crate::helpers::data(e)["payload"].clone())
        .collect();
    assert_eq!(payloads, vec![json!({"before": true}), json!({"after": true})]);
}
