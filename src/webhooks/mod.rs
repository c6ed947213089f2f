//! Durable webhooks: events of the log POSTed to HTTP receivers, signed
//! per Standard Webhooks, at least once and in order per webhook.
//!
//! ```text
//! mod.rs         the service: create, list, read, change, delete, replay
//! spec.rs        what a URL, selectors, a secret, a description may be
//! signing.rs     secrets, message ids and bodies, signatures
//! retry.rs       backoff with full jitter, and the circuit (pure)
//! sender.rs      one signed POST with a deadline, and its failure in words
//! shared.rs      the settings, and what the service and its tasks share
//! supervisor.rs  which webhooks this node delivers (leases in the store)
//! worker.rs      one webhook's delivery: cursor, retries, fencing
//! waker.rs       wakes the workers whose selectors match a commit (a hub observer)
//! ```
//!
//! The cursor, the circuit and the lease live in the store
//! (`store::webhooks`): on Postgres, one node delivers a webhook at a time
//! and hands it over when it dies; in memory, the one node does, and
//! everything is lost at exit like the log itself. Trade-offs: one event
//! in flight per webhook (order first; throughput is one round trip per
//! event), and a webhook's lag is counted exactly (one count query per
//! webhook read).

mod retry;
mod sender;
mod shared;
pub mod signing;
pub mod spec;
mod supervisor;
mod waker;
mod worker;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use retry::{backoff_ceiling, heed_retry_after, retry_delay, status, RetryPolicy, Status};
pub use shared::WebhookSettings;

use crate::domain::event::EventId;
use crate::fanout::hub::Hub;
use crate::store::webhooks::{NewWebhook, WebhookChange, WebhookRow};
use crate::store::{EventStore, StoreError};
use sender::Sender;
use shared::Shared;
use waker::Wakers;

/// Most webhooks one server keeps.
pub const MAX_WEBHOOKS: u64 = 1000;
/// How long a replaced secret keeps signing beside the new one: a day for
/// the receiver's owner to deploy the new secret (Svix keeps one as long).
pub const PREVIOUS_SECRET_KEPT: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// Why a webhook request was refused.
#[derive(Debug)]
pub enum WebhookError {
    /// A field is not what a webhook may have: the message says which.
    Invalid(String),
    NotFound,
    /// The server keeps [`MAX_WEBHOOKS`] already.
    TooMany,
    Store(StoreError),
}

impl From<StoreError> for WebhookError {
    fn from(error: StoreError) -> Self {
        WebhookError::Store(error)
    }
}

/// A new webhook as asked for, not yet checked.
#[derive(Debug, Clone, Default)]
pub struct CreateWebhook {
    pub url: String,
    pub topics: Vec<String>,
    /// Deliver this tenant's topics (the selectors name them as the
    /// tenant's tokens do); `None`: topics outside any tenant.
    pub tenant: Option<String>,
    pub secret: Option<String>,
    pub description: Option<String>,
    pub after: Option<EventId>,
}

/// A change as asked for, not yet checked; `None` leaves a field alone,
/// `description: Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub topics: Option<Vec<String>>,
    pub secret: Option<String>,
    pub description: Option<Option<String>>,
    pub enabled: Option<bool>,
    /// The replaced secret stops signing now (it leaked, or every
    /// receiver has the new one).
    pub drop_previous_secret: bool,
}

/// A webhook with what the API shows beside it.
#[derive(Debug, Clone)]
pub struct WebhookView {
    pub row: WebhookRow,
    pub status: Status,
    /// The log's head when it was read.
    pub head: EventId,
    /// Matching events after the cursor, up to the head.
    pub lag: u64,
    /// The node delivering it now, if a lease is in force.
    pub delivering_node: Option<Uuid>,
}

/// The webhooks service.
#[derive(Clone)]
pub struct Webhooks {
    shared: Arc<Shared>,
}

impl Webhooks {
    pub fn new(
        store: Arc<dyn EventStore>,
        hub: Arc<Hub>,
        settings: WebhookSettings,
    ) -> Result<Self, StoreError> {
        let sender = Sender::new(settings.timeout)
            .map_err(|e| StoreError::internal("start the webhooks' HTTP client").caused_by(e))?;
        Ok(Webhooks {
            shared: Arc::new(Shared {
                hooks: store.webhooks(),
                store,
                settings,
                sender,
                wake: Notify::new(),
                wakers: Arc::new(Wakers::new(hub)),
            }),
        })
    }

    /// Delivers the webhooks this node holds until `stop`, then gives
    /// their leases up.
    pub async fn run(self, stop: CancellationToken) {
        let waker = waker::run(Arc::clone(&self.shared.wakers), stop.clone());
        tokio::join!(supervisor::run(self.shared, stop), waker);
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.shared.settings
    }

    pub async fn create(&self, input: CreateWebhook) -> Result<WebhookView, WebhookError> {
        let url = spec::check_url(&input.url).map_err(WebhookError::Invalid)?;
        spec::check_topics(&input.topics).map_err(WebhookError::Invalid)?;
        let tenant = spec::check_tenant(input.tenant).map_err(WebhookError::Invalid)?;
        let secret = match input.secret {
            Some(secret) => spec::check_secret(&secret).map_err(WebhookError::Invalid)?,
            None => signing::generate_secret(),
        };
        let description = spec::check_description(input.description).map_err(WebhookError::Invalid)?;
        let head = self.shared.store.bounds().await?.head;
        let cursor = self.start_after(input.after, head)?;
        if self.shared.hooks.count().await? >= MAX_WEBHOOKS {
            return Err(WebhookError::TooMany);
        }
        let row = self
            .shared
            .hooks
            .create(NewWebhook {
                url,
                topics: input.topics,
                tenant,
                secret,
                description,
                cursor,
            })
            .await?;
        self.shared.wake.notify_one();
        self.view(row, head).await
    }

    pub async fn list(&self) -> Result<Vec<WebhookView>, WebhookError> {
        let head = self.shared.store.bounds().await?.head;
        let rows = self.shared.hooks.list().await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(self.view(row, head).await?);
        }
        Ok(views)
    }

    pub async fn get(&self, id: Uuid) -> Result<WebhookView, WebhookError> {
        let row = self.shared.hooks.get(id).await?.ok_or(WebhookError::NotFound)?;
        let head = self.shared.store.bounds().await?.head;
        self.view(row, head).await
    }

    pub async fn update(&self, id: Uuid, input: UpdateWebhook) -> Result<WebhookView, WebhookError> {
        let invalid = WebhookError::Invalid;
        let change = WebhookChange {
            url: input
                .url
                .as_deref()
                .map(spec::check_url)
                .transpose()
                .map_err(invalid)?,
            topics: match input.topics {
                Some(topics) => {
                    spec::check_topics(&topics).map_err(invalid)?;
                    Some(topics)
                }
                None => None,
            },
            secret: input
                .secret
                .as_deref()
                .map(spec::check_secret)
                .transpose()
                .map_err(invalid)?,
            description: input
                .description
                .map(spec::check_description)
                .transpose()
                .map_err(invalid)?,
            enabled: input.enabled,
            cursor: None,
            previous_until: input
                .secret
                .is_some()
                .then(|| chrono::Utc::now() + PREVIOUS_SECRET_KEPT),
            drop_previous: input.drop_previous_secret,
        };
        self.change(id, change).await
    }

    /// Delivery goes on with the first matching event after `after`.
    pub async fn replay(&self, id: Uuid, after: EventId) -> Result<WebhookView, WebhookError> {
        let head = self.shared.store.bounds().await?.head;
        let cursor = self.start_after(Some(after), head)?;
        self.change(
            id,
            WebhookChange {
                cursor: Some(cursor),
                ..WebhookChange::default()
            },
        )
        .await
    }

    pub async fn delete(&self, id: Uuid) -> Result<(), WebhookError> {
        if self.shared.hooks.delete(id).await? {
            self.shared.wake.notify_one();
            Ok(())
        } else {
            Err(WebhookError::NotFound)
        }
    }

    async fn change(&self, id: Uuid, change: WebhookChange) -> Result<WebhookView, WebhookError> {
        let row = self
            .shared
            .hooks
            .update(id, change)
            .await?
            .ok_or(WebhookError::NotFound)?;
        // This node's worker sees the change at once; another node's
        // within a third of a lease.
        self.shared.wake.notify_one();
        let head = self.shared.store.bounds().await?.head;
        self.view(row, head).await
    }

    /// The cursor a webhook starts from: `after`, or the head.
    fn start_after(&self, after: Option<EventId>, head: EventId) -> Result<EventId, WebhookError> {
        match after {
            None => Ok(head),
            Some(after) if after > head => Err(WebhookError::Invalid(format!(
                "afterId: {after} is past the log's head ({head})"
            ))),
            Some(after) => Ok(after),
        }
    }

    async fn view(&self, row: WebhookRow, head: EventId) -> Result<WebhookView, WebhookError> {
        let lag = if row.cursor >= head {
            0
        } else {
            self.shared
                .store
                .count_range(
                    row.cursor,
                    head,
                    &spec::stored_filter(&row.topics, row.tenant.as_deref()),
                )
                .await?
        };
        Ok(WebhookView {
            status: status(row.enabled, row.consecutive_failures, &self.shared.settings.retry),
            delivering_node: row.delivering_node(chrono::Utc::now()),
            head: head.max(row.cursor),
            lag,
            row,
        })
    }
}
