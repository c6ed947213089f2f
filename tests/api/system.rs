//! System events (CONTRACT §4): `system:status` on the topic `system`
//! every `--status-interval`, for tokens allowed to read it, and nobody may
//! publish there. (`system:alert` on a database loss is in tests/faults.)

use std::time::Duration;

use pollcast::auth::{expiry_in, Claims};
use serde_json::json;

use crate::helpers::{data, Backend, TestApp};
use crate::on_both_stores;

async fn status_frames_reach_tokens_allowed_to_read_them(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.status_interval = Duration::from_millis(200)).await;
    let operator = app.keys.mint(&Claims {
        sub: Some("operator".into()),
        exp: expiry_in(Duration::from_secs(60)),
        subscribe: vec!["system".into()],
        ..Claims::default()
    });
    let mut stream = app.subscribe_with(&operator, &["system"], None).await;
    assert_eq!(stream.next().await.event, "connection:established");
    app.publish("demo:a", "demo:said", json!({})).await;
    let status = loop {
        let frame = stream.next().await;
        if frame.event == "system:status" {
            break frame;
        }
    };
    assert!(status.id.is_empty(), "system frames are not stored");
    let payload = data(&status)["payload"].clone();
    for field in [
        "nodeId",
        "version",
        "uptimeSeconds",
        "connections",
        "eventsPerSecond",
        "lastEventId",
        "store",
        "databaseUp",
    ] {
        assert!(payload.get(field).is_some(), "{field} missing from {payload}");
    }
    assert!(payload["connections"].as_u64().unwrap() >= 1);
    assert_eq!(payload["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(payload["databaseUp"], true);

    // A token that may not read `system` is refused it; nobody publishes there.
    let refused = app
        .http
        .get(app.url("/v1/events?topic=system"))
        .bearer_auth(app.demo_token())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let everything = app.token(&["*", "*:*"], &["*"]);
    let published = app
        .publish_raw(
            &everything,
            "system",
            json!({"type": "system:status", "payload": {}}),
        )
        .await;
    assert_eq!(published.status(), 403);
    let published = app
        .publish_raw(
            &everything,
            "system:x",
            json!({"type": "system:alert", "payload": {}}),
        )
        .await;
    assert_eq!(published.status(), 403);
}
on_both_stores!(system_status, status_frames_reach_tokens_allowed_to_read_them);
