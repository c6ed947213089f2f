//! What every handler shares: the store, the hub, the services and this
//! node's limits, behind one reference count.
//!
//! A leaf of `src/http`: it names only lower layers and
//! [`super::connections`], so any handler may take an [`AppState`] without
//! pulling in the router or the server.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::connections::Connections;
use crate::auth::TokenKeys;
use crate::fanout::hub::Hub;
use crate::store::EventStore;

/// Stream settings shared by every SSE response.
#[derive(Debug, Clone, Copy)]
pub struct StreamSettings {
    pub heartbeat: Duration,
    pub retry: Duration,
}

/// What handlers share, behind one reference count: warp clones the state
/// for every route a request is tried against, and a field-by-field clone
/// (ten reference counts and the shutdown token's mutex) showed up at 5 %
/// of the server's CPU under vote ingest.
#[derive(Clone)]
pub struct AppState(Arc<AppShared>);

impl AppState {
    pub fn new(shared: AppShared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppShared {
    pub store: Arc<dyn EventStore>,
    pub hub: Arc<Hub>,
    pub keys: Arc<TokenKeys>,
    pub streams: StreamSettings,
    /// Cancelled on SIGTERM/SIGINT: every open stream ends.
    pub shutdown: CancellationToken,
    pub polling: crate::polling::Polling,
    /// This node's open streams, joinable by connection id.
    pub rooms: Arc<crate::rooms::Rooms>,
    /// Room changes for streams held by other nodes.
    pub cluster: Arc<crate::cluster::Cluster>,
    pub limits: Arc<crate::limits::Limits>,
    /// `--admin-key`: required to create a session when set, and the key
    /// of the admin API.
    pub admin_key: Option<crate::secret::Secret>,
    /// `--public-url`: where the audience joins; in the join links of
    /// session answers when set.
    pub public_url: Option<crate::config::PublicUrl>,
    /// Every open TCP connection of this node, with its caps and deadlines.
    pub connections: Arc<Connections>,
    /// Every open stream of this node: what admins and revocations close.
    pub open_streams: Arc<crate::streams::OpenStreams>,
    /// Replay reads from the store at once on this node (`--max-catchups`):
    /// reconnecting streams past it wait their turn, first come first served.
    pub catchups: Arc<tokio::sync::Semaphore>,
    /// What each node holds, for the admin console.
    pub census: Arc<crate::cluster::census::Census>,
    /// The webhooks service (`/v1/webhooks`).
    pub webhooks: crate::webhooks::Webhooks,
}
