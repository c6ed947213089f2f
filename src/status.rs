//! System events on topic `system` (CONTRACT §4): every node sends
//! `system:status` (its uptime, open streams, events per second, version)
//! every `--status-interval`, and `system:alert` when it loses or regains
//! its database or sheds load (drops subscribers that fell behind).
//!
//! These frames are transient, like `connection:*`: they describe this node
//! now, are not stored, carry no id and are not replayed, so they reach the
//! streams open on the node that sends them, and still flow while the
//! database is down. Reading them takes a token allowed to subscribe to the
//! topic `system`; nobody can publish to it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::event::EventId;
use crate::fanout::frame::{self, Frame};
use crate::fanout::hub::Hub;
use crate::rooms::system_topic;
use crate::store::EventStore;

/// What the reporter watches.
pub struct Reporter {
    pub node_id: Uuid,
    pub hub: Arc<Hub>,
    pub store: Arc<dyn EventStore>,
    pub interval: Duration,
}

/// What the last look saw, to tell what changed since.
struct LastLook {
    at: Instant,
    high: EventId,
    slow_dropped: u64,
    database_up: bool,
}

impl Reporter {
    pub async fn run(self, stop: CancellationToken) {
        let started = Instant::now();
        let mut last = LastLook {
            at: started,
            high: self.hub.high(),
            slow_dropped: self.hub.slow_dropped(),
            database_up: true,
        };
        let mut ticks = tokio::time::interval(self.interval);
        ticks.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            last = self.look(started, last).await;
        }
    }

    async fn look(&self, started: Instant, last: LastLook) -> LastLook {
        let now = Instant::now();
        let high = self.hub.high();
        let slow_dropped = self.hub.slow_dropped();
        let database_up = tokio::time::timeout(Duration::from_secs(2), self.store.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        if database_up != last.database_up {
            let (level, reason, message) = if database_up {
                ("info", "database_recovered", "the event store answers again")
            } else {
                (
                    "critical",
                    "database_unreachable",
                    "the event store does not answer: writes get 503",
                )
            };
            self.send("system:alert", self.alert(level, reason, message, json!({})));
        }
        if slow_dropped > last.slow_dropped {
            let dropped = slow_dropped - last.slow_dropped;
            let message = format!(
                "{dropped} subscriber(s) fell behind and were disconnected; they resume by Last-Event-ID"
            );
            self.send(
                "system:alert",
                self.alert(
                    "warning",
                    "slow_consumers_dropped",
                    &message,
                    json!({ "dropped": dropped }),
                ),
            );
        }
        let seconds = now.duration_since(last.at).as_secs_f64().max(0.001);
        let status = json!({
            "nodeId": self.node_id.to_string(),
            "version": env!("CARGO_PKG_VERSION"),
            "uptimeSeconds": started.elapsed().as_secs(),
            "connections": self.hub.subscriber_count(),
            "eventsPerSecond": ((high.saturating_sub(last.high)) as f64 / seconds * 10.0).round() / 10.0,
            "lastEventId": high.to_string(),
            "store": self.store.kind(),
            "databaseUp": database_up,
        });
        self.send("system:status", status);
        LastLook {
            at: now,
            high,
            slow_dropped,
            database_up,
        }
    }

    fn alert(&self, level: &str, reason: &str, message: &str, details: Value) -> Value {
        json!({
            "nodeId": self.node_id.to_string(),
            "level": level,
            "reason": reason,
            "message": message,
            "details": details,
        })
    }

    fn send(&self, event_type: &str, payload: Value) {
        let bytes = frame::transient(event_type, payload);
        self.hub
            .broadcast_transient(Frame::transient(system_topic(), bytes));
    }
}
