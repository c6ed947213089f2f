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
