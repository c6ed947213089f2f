//! Webhook subscriptions and their delivery state: what the admin API
//! creates, and what the delivering node reads and fences its writes on.
//!
//! Each row carries its cursor (the last event delivered), its circuit
//! (consecutive failures, last error) and a lease: the node that delivers
//! it (`leased_by`) until `lease_until`. A node claims a row only when no
//! lease is held or it has expired, renews what it holds, and every write
//! it makes about delivery is fenced on `leased_by = itself` and on the
//! row's `revision` (bumped by every change from the API): a node that
//! lost its lease cannot move the cursor, and a delivery that raced a
//! replay or a new URL cannot overwrite them.
//!
//! Two backends: Postgres (`postgres/webhooks.rs`, lease times from the
//! database's clock, so nodes' clocks need not agree) and memory
//! (`memory/webhooks.rs`, one node, same rules).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::StoreError;
use crate::domain::event::EventId;

/// The last failed delivery of a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    pub at: DateTime<Utc>,
    /// `HTTP 500`, `timed out after 10s`, `connection refused…`.
    pub message: String,
}

/// A secret that was replaced and still signs until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub secret: String,
    pub until: DateTime<Utc>,
}

/// One webhook as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    pub id: Uuid,
    pub url: String,
    /// Topic selectors, as the admin wrote them.
    pub topics: Vec<String>,
    /// The tenant whose topics the selectors name (`None`: topics outside
    /// any tenant). Fixed at creation.
    pub tenant: Option<String>,
    /// `whsec_` + base64 of the key.
    pub secret: String,
    /// The secret before the last change, while it still signs.
    pub previous_secret: Option<PreviousSecret>,
    pub description: Option<String>,
    pub enabled: bool,
    /// The last event delivered (or skipped by a replay's `afterId`).
    pub cursor: EventId,
    /// Bumped by every change from the API; delivery writes are fenced on it.
    pub revision: i64,
    pub consecutive_failures: u32,
    pub last_error: Option<DeliveryError>,
    pub last_delivered_at: Option<DateTime<Utc>>,
    /// The node delivering it, while its lease runs.
    pub leased_by: Option<Uuid>,
    pub lease_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl WebhookRow {
    /// A webhook as it is first stored: enabled, revision 1, never
    /// attempted, held by nobody.
    pub fn new(id: Uuid, webhook: NewWebhook, created_at: DateTime<Utc>) -> Self {
        WebhookRow {
            id,
            url: webhook.url,
            topics: webhook.topics,
            tenant: webhook.tenant,
            secret: webhook.secret,
            previous_secret: None,
            description: webhook.description,
            enabled: true,
            cursor: webhook.cursor,
            revision: 1,
            consecutive_failures: 0,
            last_error: None,
            last_delivered_at: None,
            leased_by: None,
            lease_until: None,
            created_at,
        }
    }

    /// The secrets a message is signed with at `now`: the current one,
    /// then the previous one until it expires.
    pub fn signing_secrets(&self, now: DateTime<Utc>) -> impl Iterator<Item = &str> {
        let previous = self
            .previous_secret
            .as_ref()
            .filter(|previous| previous.until > now)
            .map(|previous| previous.secret.as_str());
        std::iter::once(self.secret.as_str()).chain(previous)
    }

    /// Applies a change's secret rule: a new secret keeps the one it
    /// replaces signing until `previous_until`; `drop_previous` ends that
    /// at once (also for the secret being replaced now).
    pub fn change_secret(&mut self, change: &WebhookChange) {
        if let Some(secret) = change.secret.as_ref().filter(|s| **s != self.secret) {
            let old = std::mem::replace(&mut self.secret, secret.clone());
            self.previous_secret = change
                .previous_until
                .map(|until| PreviousSecret { secret: old, until });
        }
        if change.drop_previous {
            self.previous_secret = None;
        }
    }

    /// The node whose lease is in force at `now`, if any.
    pub fn delivering_node(&self, now: DateTime<Utc>) -> Option<Uuid> {
        match (self.leased_by, self.lease_until) {
            (Some(node), Some(until)) if until > now => Some(node),
            _ => None,
        }
    }
}

/// A webhook to create (already validated by the caller).
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub url: String,
    pub topics: Vec<String>,
    pub tenant: Option<String>,
    pub secret: String,
    pub description: Option<String>,
    pub cursor: EventId,
}

/// What a failed attempt does to the webhook besides counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Keep it enabled: the worker tries again.
    Retry,
    /// Disable it and end the lease (the receiver answered `410 Gone`);
    /// an admin enables it again.
    Disable,
}

/// A change from the API; `None` leaves a field as it is. Any change bumps
/// the revision. `enabled: Some(true)` also resets the circuit (failures
/// and the next attempt); `enabled: Some(false)` ends the lease.
#[derive(Debug, Clone, Default)]
pub struct WebhookChange {
    pub url: Option<String>,
    pub topics: Option<Vec<String>>,
    pub secret: Option<String>,
    /// With a new `secret`: until when the replaced one still signs
    /// (`None`: it stops at once).
    pub previous_until: Option<DateTime<Utc>>,
    /// The previous secret stops signing now.
    pub drop_previous: bool,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
    /// A replay: delivery goes on after this id.
    pub cursor: Option<EventId>,
}

/// The webhooks and their delivery state.
#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    async fn create(&self, webhook: NewWebhook) -> Result<WebhookRow, StoreError>;
    async fn list(&self) -> Result<Vec<WebhookRow>, StoreError>;
    async fn get(&self, id: Uuid) -> Result<Option<WebhookRow>, StoreError>;
    /// `None` when there is no such webhook.
    async fn update(&self, id: Uuid, change: WebhookChange) -> Result<Option<WebhookRow>, StoreError>;
    /// Whether there was such a webhook.
    async fn delete(&self, id: Uuid) -> Result<bool, StoreError>;
    /// How many webhooks there are.
    async fn count(&self) -> Result<u64, StoreError>;

    /// Extends every lease `node` holds on an enabled webhook to `lease`
    /// from now, and returns those webhooks as they are now.
    async fn renew(&self, node: Uuid, lease: Duration) -> Result<Vec<WebhookRow>, StoreError>;
    /// Takes, for `lease`, up to `limit` enabled webhooks that nobody holds
    /// or whose lease has expired; returns them.
    async fn claim(&self, node: Uuid, lease: Duration, limit: usize) -> Result<Vec<WebhookRow>, StoreError>;
    /// Records that the event `cursor` was delivered (and resets the
    /// circuit), if `node` still holds the webhook at `revision`.
    async fn record_delivery(
        &self,
        id: Uuid,
        node: Uuid,
        revision: i64,
        cursor: EventId,
    ) -> Result<bool, StoreError>;
    /// Records a failed attempt, if `node` still holds the webhook at
    /// `revision`: the consecutive failures now, or `None` when fenced off.
    /// `then: Disable` also disables it, ends the lease and bumps the
    /// revision.
    async fn record_failure(
        &self,
        id: Uuid,
        node: Uuid,
        revision: i64,
        error: DeliveryError,
        then: AfterFailure,
    ) -> Result<Option<u32>, StoreError>;
    /// Gives up every lease `node` holds (at shutdown), so another node
    /// takes over at once rather than after the lease expires.
    async fn release_all(&self, node: Uuid) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(secret: &str) -> WebhookRow {
        let webhook = NewWebhook {
            url: "http://127.0.0.1:9/".into(),
            topics: vec!["a:*".into()],
            tenant: None,
            secret: secret.into(),
            description: None,
            cursor: 0,
        };
        WebhookRow::new(Uuid::nil(), webhook, Utc::now())
    }

    fn new_secret(secret: &str, until: Option<DateTime<Utc>>) -> WebhookChange {
        WebhookChange {
            secret: Some(secret.into()),
            previous_until: until,
            ..WebhookChange::default()
        }
    }

    #[test]
    fn a_new_secret_keeps_the_old_one_signing_until_it_expires() {
        // Given a webhook signing with "one", when "two" replaces it with a
        // day's overlap, then both sign until then, the new one first.
        let now = Utc::now();
        let tomorrow = now + chrono::TimeDelta::hours(24);
        let mut webhook = row("one");
        webhook.change_secret(&new_secret("two", Some(tomorrow)));
        assert_eq!(webhook.signing_secrets(now).collect::<Vec<_>>(), ["two", "one"]);
        // ...and only the new one once the overlap is over.
        let later = tomorrow + chrono::TimeDelta::seconds(1);
        assert_eq!(webhook.signing_secrets(later).collect::<Vec<_>>(), ["two"]);
    }

    #[test]
    fn the_same_secret_again_or_a_drop_leaves_one_signer() {
        let now = Utc::now();
        let tomorrow = now + chrono::TimeDelta::hours(24);
        let mut webhook = row("one");
        // The same secret again is no rotation.
        webhook.change_secret(&new_secret("one", Some(tomorrow)));
        assert_eq!(webhook.previous_secret, None);
        // A rotation, then a drop: the new one alone, at once.
        webhook.change_secret(&new_secret("two", Some(tomorrow)));
        webhook.change_secret(&WebhookChange {
            drop_previous: true,
            ..WebhookChange::default()
        });
        assert_eq!(webhook.signing_secrets(now).collect::<Vec<_>>(), ["two"]);
        // A new secret with a drop in the same change replaces outright.
        webhook.change_secret(&WebhookChange {
            drop_previous: true,
            ..new_secret("three", Some(tomorrow))
        });
        assert_eq!(webhook.signing_secrets(now).collect::<Vec<_>>(), ["three"]);
        // Another change leaves the secrets alone.
        webhook.change_secret(&WebhookChange::default());
        assert_eq!(webhook.signing_secrets(now).collect::<Vec<_>>(), ["three"]);
    }
}
