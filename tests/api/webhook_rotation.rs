//! Rotating a webhook's secret without losing a message, as the Standard
//! Webhooks specification describes it: for a day after a PATCH gives a
//! new secret, each message carries two signatures (new and old), so a
//! receiver still on the old secret and one already on the new accept it
//! alike; `dropPreviousSecret` ends the old one at once (a leak). Against
//! the real receiver, which checks the signatures itself, on both stores.

use std::time::Duration;

use serde_json::json;

use crate::helpers::Backend;
use crate::on_both_stores;
use crate::webhook_delivery::{create, publish_ids, webhook_until};
use crate::webhook_receiver::Receiver;
use crate::webhooks::{admin, app_with_admin};

async fn rotation(backend: Backend) {
    let app = app_with_admin(backend).await;
    let receiver = Receiver::start().await;
    let id = create(&app, &receiver, json!(["demo:rotate"])).await;
    let mut expected = publish_ids(&app, "demo:rotate", 0..1).await;
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |got| got == expected)
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
            .wait_until(Duration::from_secs(10), |got| got == expected)
            .await
    );
    // ...and so does one already on the new secret.
    receiver.set_secret(new_secret);
    expected.extend(publish_ids(&app, "demo:rotate", 2..3).await);
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |got| got == expected)
            .await
    );
    let attempts = receiver.attempts();
    assert!(
        attempts[1..].iter().all(|a| a.signatures == 2),
        "new and old sign"
    );

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
            .wait_until(Duration::from_secs(10), |got| got == expected)
            .await
    );
}
on_both_stores!(a_secret_is_rotated_without_losing_a_message, rotation);
