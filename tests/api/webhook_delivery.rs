//! Webhook delivery against a real local receiver (`webhook_receiver.rs`)
//! that fails with 500, hangs past the deadline, then recovers: every
//! matching event arrives, at least once, in order, none skipped, each
//! signed as Standard Webhooks says (checked by the receiver); the API
//! shows the circuit opening and closing and the last error; a replay
//! sends again from the id given; a disabled webhook sends nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::on_both_stores;
use crate::webhook_receiver::{Mode, Receiver};
use crate::webhooks::{admin, app_with_admin};

pub async fn publish_ids(app: &TestApp, topic: &str, range: std::ops::Range<u32>) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in range {
        let event = app.publish(topic, "demo:said", json!({ "i": i })).await;
        ids.push(event["id"].as_str().unwrap().parse().unwrap());
    }
    ids
}

/// Reads the webhook until `done` holds (10 s at most); the last read.
pub async fn webhook_until(app: &TestApp, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, webhook) = admin(app, "GET", &format!("/v1/webhooks/{id}"), None).await;
        assert_eq!(status, 200);
        if done(&webhook) || tokio::time::Instant::now() > deadline {
            return webhook;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub async fn create(app: &TestApp, receiver: &Receiver, topics: Value) -> String {
    let (status, created) = admin(
        app,
        "POST",
        "/v1/webhooks",
        Some(json!({ "url": receiver.url, "topics": topics, "secret": receiver.secret })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    created["id"].as_str().unwrap().to_owned()
}

async fn through_failures(backend: Backend) {
    let app = app_with_admin(backend).await;
    let receiver = Receiver::start().await;
    let id = create(&app, &receiver, json!(["demo:hooks"])).await;

    // Given a healthy receiver: the matching events arrive, not the others.
    let mut expected = publish_ids(&app, "demo:hooks", 0..5).await;
    app.publish("other:x", "demo:said", json!({})).await;
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |got| got.len() >= 5)
            .await
    );

    // When it answers 500: retried, then failing, with the error shown.
    receiver.set_mode(Mode::Fail(500));
    expected.extend(publish_ids(&app, "demo:hooks", 5..10).await);
    let failing = webhook_until(&app, &id, |w| w["status"] == "failing").await;
    assert_eq!(failing["status"], "failing", "{failing}");
    assert!(failing["consecutiveFailures"].as_u64().unwrap() >= 3);
    assert_eq!(failing["lastError"]["message"], "HTTP 500");
    assert_eq!(failing["lag"], 5, "five matching events wait");
    assert!(failing["deliveringNode"].is_string());
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("pollcast_webhook_attempts_total{result=\"failed\"}"),
        "failed attempts are counted:\n{metrics}"
    );

    // When it hangs past the deadline: the error says so.
    receiver.set_mode(Mode::Hang);
    let hung = webhook_until(&app, &id, |w| {
        w["lastError"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("timed out"))
    })
    .await;
    assert_eq!(hung["lastError"]["message"], "timed out after 400ms", "{hung}");

    // When it recovers: everything arrives, in order, none skipped.
    receiver.set_mode(Mode::Accept);
    expected.extend(publish_ids(&app, "demo:hooks", 10..15).await);
    let all = receiver
        .wait_until(Duration::from_secs(10), |got| got.len() >= expected.len())
        .await;
    assert!(all, "got {:?}, expected {expected:?}", receiver.accepted());
    assert_eq!(receiver.accepted(), expected, "each event once, in order");
    let healthy = webhook_until(&app, &id, |w| w["status"] == "active" && w["lag"] == 0).await;
    assert_eq!(healthy["status"], "active", "{healthy}");
    assert_eq!(healthy["consecutiveFailures"], 0);
    assert_eq!(healthy["cursor"], expected.last().unwrap().to_string());
    assert!(healthy["lastDeliveredAt"].is_string());
    assert_eq!(
        healthy["lastError"]["message"], "timed out after 400ms",
        "the last error stays visible"
    );

    // Every attempt was signed; each event kept one webhook-id across its
    // retries, and no two events shared one; bodies carry the envelope.
    let attempts = receiver.attempts();
    assert!(attempts.iter().all(|a| a.signed), "every signature verifies");
    assert!(attempts.len() > expected.len(), "there were retries");
    for event in &expected {
        let ids: std::collections::BTreeSet<&str> = attempts
            .iter()
            .filter(|a| a.event_id == *event)
            .map(|a| a.webhook_id.as_str())
            .collect();
        assert_eq!(ids.len(), 1, "event {event}: {ids:?}");
    }
    let distinct: std::collections::BTreeSet<&str> = attempts.iter().map(|a| a.webhook_id.as_str()).collect();
    assert_eq!(distinct.len(), expected.len());
    let first = &attempts[0].body;
    assert_eq!(first["type"], "demo:said");
    assert_eq!(first["data"]["topic"], "demo:hooks");
    assert_eq!(first["data"]["payload"]["i"], 0);
    assert_eq!(first["timestamp"], first["data"]["timestamp"]);
}
on_both_stores!(delivery_survives_failures_and_timeouts_in_order, through_failures);

async fn replay_and_disable(backend: Backend) {
    let app = app_with_admin(backend).await;
    let receiver = Receiver::start().await;
    let id = create(&app, &receiver, json!(["demo:*"])).await;
    let ids = publish_ids(&app, "demo:replay", 0..4).await;
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |got| got == ids)
            .await
    );

    // Given a replay after the first event: the rest come again, in order.
    let (status, replayed) = admin(
        &app,
        "POST",
        &format!("/v1/webhooks/{id}/replay"),
        Some(json!({ "afterId": ids[0].to_string() })),
    )
    .await;
    assert_eq!(status, 200, "{replayed}");
    let mut expected = ids.clone();
    expected.extend(&ids[1..]);
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |got| got == expected)
            .await,
        "{:?}",
        receiver.accepted()
    );
    // A replay past the head is refused.
    let (status, _) = admin(
        &app,
        "POST",
        &format!("/v1/webhooks/{id}/replay"),
        Some(json!({ "afterId": "99999999" })),
    )
    .await;
    assert_eq!(status, 422);

    // Disabled: nothing is sent. Enabled again: what was missed comes.
    let (_, disabled) = admin(
        &app,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(json!({ "enabled": false })),
    )
    .await;
    assert_eq!(disabled["status"], "disabled");
    let later = publish_ids(&app, "demo:replay", 4..6).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.accepted(), expected, "nothing while disabled");
    let (_, enabled) = admin(
        &app,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(json!({ "enabled": true })),
    )
    .await;
    assert_eq!(enabled["lag"], 2);
    expected.extend(&later);
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |got| got == expected)
            .await
    );

    // Deleted: nothing more is sent.
    let (status, _) = admin(&app, "DELETE", &format!("/v1/webhooks/{id}"), None).await;
    assert_eq!(status, 204);
    publish_ids(&app, "demo:replay", 6..7).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.accepted(), expected);
}
on_both_stores!(replay_resends_and_disable_pauses, replay_and_disable);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_polling_events_go_out_when_selected() {
    let app = app_with_admin(Backend::Postgres).await;
    let receiver = Receiver::start().await;
    create(&app, &receiver, json!(["session:*"])).await;
    let (status, session) = admin(&app, "POST", "/v1/sessions", Some(json!({ "title": "Hooks" }))).await;
    assert_eq!(status, 201, "{session}");
    let delivered = receiver
        .wait_until(Duration::from_secs(10), |got| !got.is_empty())
        .await;
    assert!(delivered, "a session event arrives");
    let first = &receiver.attempts()[0].body;
    assert!(
        first["data"]["topic"].as_str().unwrap().starts_with("session:"),
        "{first}"
    );
}

/// Given a webhook of tenant acme on `orders:*` and one without a tenant on
/// the same selector, when acme, globex and a plain publisher each publish
/// `orders:1`, then the acme webhook gets acme's event only (its envelope
/// naming the topic as acme's clients see it) and the plain one the plain
/// event only.
async fn tenants_webhooks(backend: Backend) {
    use pollcast::auth::{expiry_in, Claims};
    let app = app_with_admin(backend).await;
    let tenant_token = |tenant: &str| {
        app.keys.mint(&Claims {
            sub: Some("backend".into()),
            exp: expiry_in(Duration::from_secs(600)),
            publish: vec!["orders:*".into()],
            tenant: Some(tenant.into()),
            ..Claims::default()
        })
    };
    let acme_receiver = Receiver::start().await;
    let plain_receiver = Receiver::start().await;
    let (status, acme_hook) = admin(
        &app,
        "POST",
        "/v1/webhooks",
        Some(json!({ "url": acme_receiver.url, "topics": ["orders:*"], "tenant": "acme", "secret": acme_receiver.secret })),
    )
    .await;
    assert_eq!(status, 201, "{acme_hook}");
    assert_eq!(acme_hook["tenant"], "acme");
    create(&app, &plain_receiver, json!(["orders:*"])).await;
    let (status, refused) = admin(
        &app,
        "POST",
        "/v1/webhooks",
        Some(json!({ "url": acme_receiver.url, "topics": ["orders:*"], "tenant": "Acme Corp" })),
    )
    .await;
    assert_eq!(status, 422, "{refused}");

    let publish = |token: String| {
        let app = &app;
        async move {
            let response = app
                .publish_raw(&token, "orders:1", json!({"type": "order:paid", "payload": {}}))
                .await;
            assert_eq!(response.status(), 201);
            let body: Value = response.json().await.unwrap();
            body["id"].as_str().unwrap().parse::<i64>().unwrap()
        }
    };
    let acme = publish(tenant_token("acme")).await;
    let _globex = publish(tenant_token("globex")).await;
    let plain = publish(app.token(&["orders:*"], &[])).await;

    assert!(
        acme_receiver
            .wait_until(Duration::from_secs(10), |got| !got.is_empty())
            .await
    );
    assert!(
        plain_receiver
            .wait_until(Duration::from_secs(10), |got| !got.is_empty())
            .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(acme_receiver.accepted(), vec![acme]);
    assert_eq!(plain_receiver.accepted(), vec![plain]);
    let attempt = &acme_receiver.attempts()[0];
    assert!(attempt.signed);
    assert_eq!(attempt.body["data"]["topic"], "orders:1");
}
on_both_stores!(a_tenants_webhook_gets_its_tenants_events, tenants_webhooks);
