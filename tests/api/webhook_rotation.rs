//! Rotating a webhook's secret without losing a message, as the Standard
//! Webhooks specification describes it: for a day after a PATCH gives a
//! new secret, each message carries two signatures (new and old), so a
//! receiver still on the old secret and one already on the new accept it
//! alike; `dropPreviousSecret` ends the old one at once (a leak). Against
//! the real receiver, which checks the signatures itself, on both stores.
//!
//! A message may come twice (at least once): the worker can send an event
//! under the row it had just before a change reaches it; that attempt's
//! cursor write is then fenced off and the event goes again under the new
//! row. So arrivals are compared without repeats.

use std::time::Duration;

use serde_json::json;

use crate::helpers::Backend;
use crate::on_both_stores;
use crate::webhook_delivery::{create, publish_ids, webhook_until};
use crate::webhook_receiver::Receiver;

/// Accepted event ids in arrival order, each once.
fn unique(ids: &[i64]) -> Vec<i64> {
    let mut seen = std::collections::BTreeSet::new();
    ids.iter().copied().filter(|id| seen.insert(*id)).collect()
}
use crate::webhooks::{admin, app_with_admin};

async fn rotation(backend: Backend) {
    let app = app_with_admin(backend).await;
    let receiver = Receiver::start().await;
    let id = create(&app, &receiver, json!(["demo:rotate"])).await;
    let mut expected = publish_ids(&app, "demo:rotate", 0..1).await;
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |got| unique(got) == expected)
            .await
    );
    assert_eq!(receiver.attempts()[0].signatures, 1, "one secret, one signature");

    // When the admin gives a new secret: it is shown once, and the old one
    // signs beside it for a day.
    let (status, changed) = admin(&app, "PATCH", &format!("/v1/webhooks/{id}"), Some(json!({}))).await;
    assert_eq!((status, &changed["previousSecretExpiresAt"]), (200, &json!(null)));
    let new_secret = "whsec_bmV3LXNlY3JldC1mb3ItdGhlLXJvdGF0aW9uLXRlc3Q=";
    let (status, changed) = admin(
        &app,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(json!({ "secret": new_secret })),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["secret"], new_secret);
    let expires =
        chrono::DateTime::parse_from_rfc3339(changed["previousSecretExpiresAt"].as_str().unwrap()).unwrap();
    let in_a_day = expires.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(
        (chrono::TimeDelta::hours(23)..=chrono::TimeDelta::hours(24)).contains(&in_a_day),
        "{in_a_day}"
    );

    // Then a receiver still on the old secret accepts the next message...
    expected.extend(publish_ids(&app, "demo:rotate", 1..2).await);
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |got| unique(got) == expected)
            .await
    );
    // ...and so does one already on the new secret.
    receiver.set_secret(new_secret);
    expected.extend(publish_ids(&app, "demo:rotate", 2..3).await);
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |got| unique(got) == expected)
            .await
    );
    // Each of these two events was accepted signed by both secrets.
    let attempts = receiver.attempts();
    for event in &expected[1..] {
        assert!(
            attempts
                .iter()
                .any(|a| a.event_id == *event && a.accepted && a.signatures == 2),
            "event {event}: new and old sign"
        );
    }

    // (Recorded too, so that the change below cannot fence off the last
    // delivery's cursor write and have it sent again.)
    let last = expected.last().unwrap().to_string();
    let caught_up = webhook_until(&app, &id, |w| w["cursor"] == last).await;
    assert_eq!(caught_up["cursor"], last);

    // When the previous secret is dropped: only the new one signs, so a
    // receiver on the old secret refuses what follows.
    let (status, dropped) = admin(
        &app,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(json!({ "dropPreviousSecret": true })),
    )
    .await;
    assert_eq!(
        (status, &dropped["previousSecretExpiresAt"]),
        (200, &json!(null)),
        "{dropped}"
    );
    assert!(dropped.get("secret").is_none(), "shown only when set");
    receiver.set_secret(&receiver.secret);
    let refused = publish_ids(&app, "demo:rotate", 3..4).await[0];
    let failing = webhook_until(&app, &id, |w| w["consecutiveFailures"].as_u64() >= Some(1)).await;
    assert_eq!(failing["lastError"]["message"], "HTTP 401", "{failing}");
    let last = receiver.attempts().pop().unwrap();
    assert_eq!((last.event_id, last.signed, last.signatures), (refused, false, 1));
    // A receiver on the new secret takes it.
    receiver.set_secret(new_secret);
    expected.push(refused);
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |got| unique(got) == expected)
            .await
    );
}
on_both_stores!(a_secret_is_rotated_without_losing_a_message, rotation);
