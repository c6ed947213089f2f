//! What a receiver can tell the sender beyond "failed", as the Standard
//! Webhooks specification asks senders to heed it, against the real local
//! receiver: `410 Gone` disables the webhook after one attempt (until an
//! admin enables it again, when that event goes out first), and a
//! `Retry-After` holds the next attempt back at least that long, though
//! the backoff alone would have retried within a tenth of a second.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{Backend, TestApp};
use crate::on_both_stores;
use crate::webhook_delivery::{create, publish_ids, webhook_until};
use crate::webhook_receiver::{Mode, Receiver};
use crate::webhooks::{admin, app_with_admin};

async fn gone_disables(backend: Backend) {
    let app: TestApp = app_with_admin(backend).await;
    let receiver = Receiver::start().await;
    let id = create(&app, &receiver, json!(["demo:gone"])).await;
    let mut expected = publish_ids(&app, "demo:gone", 0..1).await;
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |got| got.len() == 1)
            .await
    );

    // Given a receiver that answers 410 Gone: one attempt, then disabled,
    // with the reason shown.
    receiver.set_mode(Mode::Fail(410));
    let refused = publish_ids(&app, "demo:gone", 1..2).await[0];
    let disabled = webhook_until(&app, &id, |w| w["status"] == "disabled").await;
    assert_eq!(
        (&disabled["status"], &disabled["enabled"]),
        (&json!("disabled"), &json!(false)),
        "{disabled}"
    );
    let message = disabled["lastError"]["message"].as_str().unwrap();
    assert!(message.starts_with("HTTP 410 Gone"), "{message}");
    assert!(disabled["deliveringNode"].is_null(), "{disabled}");
    // The retry policy would try again within 20–100 ms, and every 300 ms
    // once failing: well past that, still one attempt, and nothing newer.
    publish_ids(&app, "demo:gone", 2..3).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let tries = receiver.attempts();
    assert_eq!(
        tries.len(),
        2,
        "{:?}",
        tries.iter().map(|a| a.event_id).collect::<Vec<_>>()
    );
    assert_eq!(tries[1].event_id, refused);

    // When an admin enables it again: from the refused event on, in order.
    receiver.set_mode(Mode::Accept);
    let (status, enabled) = admin(
        &app,
        "PATCH",
        &format!("/v1/webhooks/{id}"),
        Some(json!({ "enabled": true })),
    )
    .await;
    assert_eq!(status, 200, "{enabled}");
    expected.extend([refused, refused + 1]);
    let all = receiver
        .wait_until(Duration::from_secs(10), |got| got.len() >= expected.len())
        .await;
    assert!(all, "got {:?}, expected {expected:?}", receiver.accepted());
    assert_eq!(receiver.accepted(), expected);
}
on_both_stores!(a_receiver_that_answers_gone_disables_its_webhook, gone_disables);

/// Given a receiver that answers 503 with `Retry-After: 2`, the next
/// attempt comes no sooner than two seconds later.
#[tokio::test]
async fn a_retry_after_holds_the_next_attempt_back() {
    let app = app_with_admin(Backend::Memory).await;
    let receiver = Receiver::start().await;
    receiver.set_mode(Mode::RetryAfter(503, 2));
    create(&app, &receiver, json!(["demo:later"])).await;
    let event = publish_ids(&app, "demo:later", 0..1).await[0];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while receiver.attempts().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    receiver.set_mode(Mode::Accept);
    assert!(
        receiver
            .wait_until(Duration::from_secs(10), |got| got == [event])
            .await
    );
    let tries = receiver.attempts();
    assert_eq!(tries.len(), 2, "one refused, one accepted");
    let waited = tries[1].at - tries[0].at;
    assert!(
        waited >= Duration::from_millis(1_950),
        "the second attempt came {waited:?} after the first"
    );
}
