//! Prometheus metrics: the names in one place, and the recorder behind
//! `GET /metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const CONNECTIONS: &str = "pollcast_connections";
pub const EVENTS_APPENDED: &str = "pollcast_events_appended_total";
pub const DELIVERIES: &str = "pollcast_deliveries_total";
pub const REPLAYED: &str = "pollcast_replayed_events_total";
pub const APPEND_BATCH_SIZE: &str = "pollcast_append_batch_size";
pub const SLOW_CONSUMERS_DROPPED: &str = "pollcast_slow_consumers_dropped_total";
pub const TCP_CONNECTIONS: &str = "pollcast_tcp_connections";
pub const TCP_REFUSED: &str = "pollcast_tcp_connections_refused_total";
pub const TIMED_OUT: &str = "pollcast_connections_timed_out_total";
pub const VOTE_BATCH_SIZE: &str = "pollcast_vote_batch_size";
pub const JOIN_BATCH_SIZE: &str = "pollcast_join_batch_size";
pub const WEBHOOK_ATTEMPTS: &str = "pollcast_webhook_attempts_total";
pub const OUTBOX_EVENTS: &str = "pollcast_outbox_events_total";
pub const JWKS_FETCHES: &str = "pollcast_jwks_fetches_total";

/// The process-wide recorder. Installed once: the `metrics` facade has one
/// global recorder, and tests start many servers in one process.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(APPEND_BATCH_SIZE.into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
            )
            .expect("bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (by an embedding
        // program); ours then simply records nothing.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_gauge!(CONNECTIONS, "Open SSE streams on this node");
    metrics::describe_counter!(EVENTS_APPENDED, "Events committed by this node");
    metrics::describe_counter!(DELIVERIES, "Live frames handed to subscribers");
    metrics::describe_counter!(REPLAYED, "Events sent from the store to reconnecting streams");
    metrics::describe_histogram!(APPEND_BATCH_SIZE, "Appends committed per writer transaction");
    metrics::describe_counter!(
        SLOW_CONSUMERS_DROPPED,
        "Streams closed because their buffer was full"
    );
    metrics::describe_histogram!(VOTE_BATCH_SIZE, "Votes judged and committed per vote batch");
    metrics::describe_histogram!(JOIN_BATCH_SIZE, "Joins committed per join batch");
    metrics::describe_gauge!(TCP_CONNECTIONS, "Open TCP connections on this node, all states");
    metrics::describe_counter!(
        WEBHOOK_ATTEMPTS,
        "Webhook POSTs sent by this node, by result (delivered, failed)"
    );
    metrics::describe_counter!(
        OUTBOX_EVENTS,
        "Rows of pollcast.outbox (publishes made in SQL) this node's writer took, by result (published, dropped)"
    );
    metrics::describe_counter!(
        JWKS_FETCHES,
        "Fetches of --token-jwks-url key sets, by result (changed, unchanged, failed)"
    );
    metrics::describe_counter!(
        TCP_REFUSED,
        "Connections refused or evicted at accept, by reason (per_address, at_capacity, evicted_waiting)"
    );
    metrics::describe_counter!(
        TIMED_OUT,
        "Connections closed for a slow request head, an idle keep-alive or a slow body, by reason"
    );
}

pub fn connection_opened() {
    metrics::gauge!(TCP_CONNECTIONS).increment(1.0);
}

pub fn connection_closed() {
    metrics::gauge!(TCP_CONNECTIONS).decrement(1.0);
}

pub fn connection_refused(reason: &'static str) {
    metrics::counter!(TCP_REFUSED, "reason" => reason).increment(1);
}

pub fn connection_timed_out(reason: &'static str) {
    metrics::counter!(TIMED_OUT, "reason" => reason).increment(1);
}

pub fn webhook_attempt(delivered: bool) {
    let result = if delivered { "delivered" } else { "failed" };
    metrics::counter!(WEBHOOK_ATTEMPTS, "result" => result).increment(1);
}

/// A JWKS URL was fetched: `changed` (new keys installed), `unchanged`,
/// or `failed` (the last keys stay).
pub fn jwks_fetched(result: &'static str) {
    metrics::counter!(JWKS_FETCHES, "result" => result).increment(1);
}

pub fn outbox_taken(published: usize, dropped: usize) {
    metrics::counter!(OUTBOX_EVENTS, "result" => "published").increment(published as u64);
    if dropped > 0 {
        metrics::counter!(OUTBOX_EVENTS, "result" => "dropped").increment(dropped as u64);
    }
}

pub fn events_appended(count: usize) {
    metrics::counter!(EVENTS_APPENDED).increment(count as u64);
}
