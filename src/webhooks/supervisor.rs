//! Which webhooks this node delivers: every `lease / 3` (and at once when
//! nudged), one statement renews every lease the node holds and returns
//! those webhooks as they are now, and one claims the free or expired
//! ones. Each held webhook has one [`Worker`] task; it gets the row again
//! when the API changed it (its revision moved) and is stopped when the
//! lease is gone (disabled, deleted, taken over after this node could
//! not renew for a whole lease).
//!
//! A node stops its workers once it cannot be sure of its leases: a
//! lease counts from before the statement that renewed it (Postgres
//! starts it later), and the workers stop a third of a lease before it
//! would end when renewal fails or hangs (a renewal gets a third of a
//! lease, so the check comes before the lease ends). So when another node
//! may claim a webhook, this one has already cancelled its worker, the
//! request in flight included.
//!
//! At shutdown the workers stop first (an attempt under way is dropped),
//! then the node gives its leases up so that another node takes over at
//! once. A node killed outright gives nothing up: its leases expire and
//! another node claims them within `lease + lease / 3`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::shared::Shared;
use super::worker::Worker;
use crate::store::webhooks::WebhookRow;
use crate::store::StoreError;

/// Most webhooks claimed per round: a node starting next to a busy one
/// leaves some for the others.
const CLAIM_PER_ROUND: usize = 16;

/// A webhook this node delivers.
struct Held {
    row: watch::Sender<WebhookRow>,
    lost: CancellationToken,
    task: JoinHandle<()>,
}

pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let node = shared.settings.node_id;
    let lease = shared.settings.lease;
    let round = (lease / 3).max(Duration::from_millis(50));
    let mut held: HashMap<Uuid, Held> = HashMap::new();
    let mut renewed = Instant::now();
    let mut failing = false;
    loop {
        held.retain(|_, webhook| !webhook.task.is_finished());
        let started = Instant::now();
        let renewal = tokio::time::timeout(round, shared.hooks.renew(node, lease))
            .await
            .unwrap_or_else(|_| Err(StoreError::unavailable("renewing webhook leases took too long")));
        match renewal {
            Ok(rows) => {
                renewed = started;
                if std::mem::take(&mut failing) {
                    tracing::info!("webhook leases renew again");
                }
                let mut rows: HashMap<Uuid, WebhookRow> = rows.into_iter().map(|r| (r.id, r)).collect();
                for (id, webhook) in &held {
                    match rows.remove(id) {
                        Some(row) => {
                            webhook.row.send_if_modified(|current| {
                                let changed = current.revision != row.revision;
                                *current = row;
                                changed
                            });
                        }
                        None => webhook.lost.cancel(),
                    }
                }
                // Held here without a worker (one that ended on its own).
                for (id, row) in rows {
                    held.insert(id, start(&shared, row, &stop));
                }
            }
            Err(error) => {
                if !std::mem::replace(&mut failing, true) {
                    tracing::warn!(error = %error.report(), "cannot renew webhook leases; retrying");
                }
            }
        }
        // Close to the end of the last lease this node is sure of, another
        // node may soon deliver its webhooks: stop before it can.
        let sure_until = renewed + lease.saturating_sub(round);
        if Instant::now() >= sure_until {
            held.values().for_each(|webhook| webhook.lost.cancel());
        }
        if !failing {
            match shared.hooks.claim(node, lease, CLAIM_PER_ROUND).await {
                Ok(rows) => {
                    for row in rows {
                        if let Some(old) = held.remove(&row.id) {
                            // Never two workers on one webhook.
                            old.lost.cancel();
                            let _ = old.task.await;
                        }
                        held.insert(row.id, start(&shared, row, &stop));
                    }
                }
                Err(error) => tracing::warn!(error = %error.report(), "cannot claim webhooks; retrying"),
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(round) => {}
            _ = tokio::time::sleep_until(sure_until), if !held.is_empty() => {}
        }
    }
    for webhook in held.into_values() {
        webhook.lost.cancel();
        let _ = webhook.task.await;
    }
    match tokio::time::timeout(Duration::from_secs(2), shared.hooks.release_all(node)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(error = %error.report(), "could not give up webhook leases"),
        Err(_) => tracing::warn!("giving up webhook leases took too long"),
    }
}

fn start(shared: &Arc<Shared>, row: WebhookRow, stop: &CancellationToken) -> Held {
    // Not the URL: receivers' URLs often carry credentials.
    tracing::info!(webhook = %row.id, "delivering a webhook from this node");
    let (sender, receiver) = watch::channel(row);
    let lost = stop.child_token();
    let worker = Worker::new(Arc::clone(shared), receiver, lost.clone());
    Held {
        row: sender,
        lost,
        task: tokio::spawn(worker.run()),
    }
}
