//! The LISTEN connection: other nodes' commit notices become commit
//! hints, bus messages go to the cluster bus's readers. It reconnects with
//! a backoff for as long as the store lives.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;

use super::notify::{other_nodes_head, raise, BUS_CHANNEL, NOTIFY_CHANNEL};
use crate::domain::event::EventId;

/// Where the LISTEN connection hands what it hears.
pub struct Heard {
    /// This node's commits, named in their NOTIFYs. The listener ignores
    /// them: the writer hands each batch to the tail as it commits, and a
    /// NOTIFY heard first would send the tail to read the batch back from
    /// the table. Should the writer lose a batch's reply after its COMMIT,
    /// the tail's periodic read finds the events.
    pub origin: String,
    /// Commit hints from `pollcast_events`.
    pub hints: watch::Sender<EventId>,
    /// Cluster bus messages from `pollcast_bus`.
    pub bus: broadcast::Sender<String>,
    /// Whether LISTEN is in effect right now.
    pub listening: watch::Sender<bool>,
}

/// Keeps a LISTEN connection open and turns notifications into hints and
/// bus messages. After every (re)connect it raises a hint anyway:
/// notifications sent while it was down are lost, so readers must look at
/// the table (and bus requests time out).
pub async fn run_listener(config: tokio_postgres::Config, heard: Heard, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !stop.is_cancelled() {
        match listen_once(&config, &heard, &stop).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => {
                tracing::warn!(%error, "LISTEN connection lost; reconnecting");
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

async fn listen_once(
    config: &tokio_postgres::Config,
    heard: &Heard,
    stop: &CancellationToken,
) -> Result<(), tokio_postgres::Error> {
    let hints = &heard.hints;
    let (client, mut connection) = config.connect(NoTls).await?;
    // The plain connection future drops notifications; poll_message hands
    // them over.
    let (tx, mut notifications) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let _ = tx.send((n.channel() == BUS_CHANNEL, n.payload().to_string()));
                }
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}; LISTEN {BUS_CHANNEL}"))
        .await?;
    heard.listening.send_replace(true);
    hints.send_modify(|_| {});
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            next = notifications.recv() => match next {
                Some((true, message)) => {
                    let _ = heard.bus.send(message);
                }
                Some((false, payload)) => {
                    if let Some(id) = other_nodes_head(&payload, &heard.origin) {
                        hints.send_if_modified(|known| raise(known, id));
                    }
                }
                None => break,
            },
        }
    }
    heard.listening.send_replace(false);
    drop(client);
    match driver.await {
        Ok(result) => result,
        Err(_) => Ok(()),
    }
}
