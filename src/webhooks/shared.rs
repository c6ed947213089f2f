//! The settings of webhook delivery on this node, and what the service,
//! the supervisor and the workers share (one reference count).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use super::retry::RetryPolicy;
use super::sender::Sender;
use super::waker::Wakers;
use crate::store::webhooks::WebhookStore;
use crate::store::EventStore;

/// How this node delivers webhooks.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// This node, as leases name it.
    pub node_id: Uuid,
    /// How long a claim lasts unless renewed (renewed every third of it).
    pub lease: Duration,
    /// Deadline of one POST, connection included.
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// What the service and its tasks share.
pub(super) struct Shared {
    pub store: Arc<dyn EventStore>,
    pub hooks: Arc<dyn WebhookStore>,
    pub settings: WebhookSettings,
    pub sender: Sender,
    /// Wakes the supervisor: a webhook was created or changed here.
    pub wake: Notify,
    /// Wakes the workers whose events were committed.
    pub wakers: Arc<Wakers>,
}
