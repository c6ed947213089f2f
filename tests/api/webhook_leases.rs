//! The lease rules of webhook delivery, on each real store: one node
//! holds a webhook at a time, another claims it only once the lease has
//! expired, and a node that lost it (or that read an older revision)
//! cannot move the cursor or record a failure.

use std::sync::Arc;
use std::time::Duration;

use pollcast::store::memory::MemoryStore;
use pollcast::store::postgres::PostgresStore;
use pollcast::store::webhooks::{AfterFailure, DeliveryError, NewWebhook, WebhookChange};
use pollcast::store::EventStore;
use uuid::Uuid;

use crate::helpers::{Backend, TestDb};
use crate::on_both_stores;

async fn fenced(backend: Backend) {
    let db = match backend {
        Backend::Memory => None,
        Backend::Postgres => Some(TestDb::create().await),
    };
    let store: Arc<dyn EventStore> = match &db {
        None => Arc::new(MemoryStore::new()),
        Some(db) => PostgresStore::connect(&db.url).await.unwrap(),
    };
    let hooks = store.webhooks();
    let created = hooks
        .create(NewWebhook {
            url: "http://127.0.0.1:9/".into(),
            topics: vec!["demo:*".into()],
            tenant: None,
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            description: None,
            cursor: 0,
        })
        .await
        .unwrap();
    let (id, rev) = (created.id, created.revision);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let lease = Duration::from_millis(400);

    // Given node A holds it: B cannot claim it, nor write for it.
    assert_eq!(hooks.claim(a, lease, 10).await.unwrap().len(), 1);
    assert!(hooks.claim(b, lease, 10).await.unwrap().is_empty());
    assert!(!hooks.record_delivery(id, b, rev, 5).await.unwrap());
    assert!(hooks.record_delivery(id, a, rev, 5).await.unwrap());
    assert_eq!(hooks.renew(a, lease).await.unwrap().len(), 1);

    // When A's lease runs out, B claims it, from A's cursor...
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let taken = hooks.claim(b, lease, 10).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].cursor, 5);
    assert_eq!(taken[0].leased_by, Some(b));
    // ...and A, back from its pause, can neither move the cursor nor
    // record a failure, nor renew.
    assert!(!hooks.record_delivery(id, a, rev, 6).await.unwrap());
    let error = DeliveryError {
        at: chrono::Utc::now(),
        message: "HTTP 500".into(),
    };
    assert_eq!(
        hooks
            .record_failure(id, a, rev, error.clone(), AfterFailure::Retry)
            .await
            .unwrap(),
        None
    );
    assert!(hooks.renew(a, lease).await.unwrap().is_empty());
    assert_eq!(
        hooks
            .record_failure(id, b, rev, error.clone(), AfterFailure::Retry)
            .await
            .unwrap(),
        Some(1)
    );

    // A change from the API (a replay) fences off writes of the old revision.
    let replayed = hooks
        .update(
            id,
            WebhookChange {
                cursor: Some(2),
                ..WebhookChange::default()
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(replayed.revision, rev + 1);
    assert!(!hooks.record_delivery(id, b, rev, 7).await.unwrap());
    assert!(hooks.record_delivery(id, b, rev + 1, 3).await.unwrap());
    let read = hooks.get(id).await.unwrap().unwrap();
    assert_eq!((read.cursor, read.consecutive_failures), (3, 0));
    // The cursor only moves forward: a late write of an older delivery by
    // a worker that lost the webhook and got it back does not move it back.
    assert!(!hooks.record_delivery(id, b, rev + 1, 2).await.unwrap());
    assert!(!hooks.record_delivery(id, b, rev + 1, 3).await.unwrap());
    assert_eq!(hooks.get(id).await.unwrap().unwrap().cursor, 3);

    // Disabled: the lease ends and nobody claims it; enabled: claimable.
    let off = WebhookChange {
        enabled: Some(false),
        ..WebhookChange::default()
    };
    assert_eq!(hooks.update(id, off).await.unwrap().unwrap().leased_by, None);
    assert!(hooks.claim(a, lease, 10).await.unwrap().is_empty());
    let on = WebhookChange {
        enabled: Some(true),
        ..WebhookChange::default()
    };
    hooks.update(id, on).await.unwrap();
    assert_eq!(hooks.claim(a, lease, 10).await.unwrap().len(), 1);
    // Given up at shutdown: claimable at once.
    hooks.release_all(a).await.unwrap();
    let claimed = hooks.claim(b, lease, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);

    // A failure that disables (410 Gone): only by the holder; the webhook
    // is then disabled, unleased, at a new revision, and nobody claims it.
    let rev = claimed[0].revision;
    let gone = DeliveryError {
        message: "HTTP 410 Gone".into(),
        ..error
    };
    assert_eq!(
        hooks
            .record_failure(id, a, rev, gone.clone(), AfterFailure::Disable)
            .await
            .unwrap(),
        None
    );
    assert!(hooks.get(id).await.unwrap().unwrap().enabled);
    assert_eq!(
        hooks
            .record_failure(id, b, rev, gone, AfterFailure::Disable)
            .await
            .unwrap(),
        Some(1)
    );
    let read = hooks.get(id).await.unwrap().unwrap();
    assert_eq!(
        (read.enabled, read.leased_by, read.revision),
        (false, None, rev + 1)
    );
    assert_eq!(read.last_error.unwrap().message, "HTTP 410 Gone");
    assert!(hooks.claim(a, lease, 10).await.unwrap().is_empty());
    assert!(hooks.renew(b, lease).await.unwrap().is_empty());
}
on_both_stores!(a_lost_lease_cannot_move_the_cursor, fenced);
