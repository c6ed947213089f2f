//! Publishing benchmark events: an open-loop schedule at a fixed rate (each
//! POST runs on its own; a slow server never delays the next send, and a
//! send that would exceed the in-flight cap is skipped and counted), or a
//! closed loop of N workers for a backlog.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::client::Client;
use crate::sse::number_after;
use crate::util::{unix_nanos, Bits};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Style {
    /// POST `{"type":…,"payload":{"sentAt":…,"seq":…}}` with a bearer token.
    Pollcast,
    /// POST the raw `{"sentAt":…,"seq":…}` to an Nchan publisher location.
    Nchan,
}

pub struct Publisher {
    client: Client,
    style: Style,
    token: Option<String>,
    event_type: String,
    /// Seqs from 0 to `planned - 1`.
    planned: u64,
    ok: AtomicU64,
    non_2xx: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    ok_bits: Vec<AtomicU64>,
    max_ok_seq: AtomicI64,
    min_id: AtomicU64,
    max_id: AtomicU64,
    lag_max_us: AtomicU64,
    statuses: Mutex<BTreeMap<u16, u64>>,
    error_kinds: Mutex<BTreeMap<String, u64>>,
}

/// What a publishing phase did.
#[derive(Debug)]
pub struct Summary {
    pub planned: u64,
    pub ok: u64,
    pub non_2xx: u64,
    pub errors: u64,
    pub skipped: u64,
    pub ok_seqs: Bits,
    pub lag_max_ms: f64,
    /// Non-2xx statuses.
    pub statuses: BTreeMap<u16, u64>,
    pub error_kinds: BTreeMap<String, u64>,
    /// Lowest and highest `id` in 2xx responses (pollcast).
    pub ids: Option<(u64, u64)>,
}

impl Summary {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "planned": self.planned,
            "ok": self.ok,
            "non_2xx": self.non_2xx,
            "errors": self.errors,
            "skipped_in_flight_cap": self.skipped,
            "schedule_lag_max_ms": self.lag_max_ms,
            "statuses": self.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "error_kinds": self.error_kinds,
            "first_id": self.ids.map(|i| i.0),
            "last_id": self.ids.map(|i| i.1),
        })
    }

    pub fn text(&self) -> String {
        let mut text = format!(
            "{} ok of {} planned, {} non-2xx, {} errors, {} skipped (in-flight cap)",
            self.ok, self.planned, self.non_2xx, self.errors, self.skipped
        );
        if !self.statuses.is_empty() {
            text.push_str(&format!(" statuses {:?}", self.statuses));
        }
        if !self.error_kinds.is_empty() {
            text.push_str(&format!(" errors {:?}", self.error_kinds));
        }
        text
    }
}

impl Publisher {
    pub fn new(
        client: Client,
        style: Style,
        token: Option<String>,
        event_type: String,
        planned: u64,
    ) -> Arc<Self> {
        Arc::new(Publisher {
            client,
            style,
            token,
            event_type,
            planned,
            ok: AtomicU64::new(0),
            non_2xx: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            ok_bits: (0..planned.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            max_ok_seq: AtomicI64::new(-1),
            min_id: AtomicU64::new(u64::MAX),
            max_id: AtomicU64::new(0),
            lag_max_us: AtomicU64::new(0),
            statuses: Mutex::new(BTreeMap::new()),
            error_kinds: Mutex::new(BTreeMap::new()),
        })
    }

    /// The highest seq answered 2xx so far.
    pub fn max_ok_seq(&self) -> Option<u64> {
        u64::try_from(self.max_ok_seq.load(Ordering::Acquire)).ok()
    }

    fn body(&self, seq: u64) -> Bytes {
        let now = unix_nanos();
        let text = match self.style {
            Style::Pollcast => format!(
                r#"{{"type":"{}","payload":{{"sentAt":{now},"seq":{seq}}}}}"#,
                self.event_type
            ),
            Style::Nchan => format!(r#"{{"sentAt":{now},"seq":{seq}}}"#),
        };
        Bytes::from(text)
    }

    /// One POST of event `seq`, its timestamp taken once a connection is ready.
    async fn publish(&self, seq: u64) {
        let token = match self.style {
            Style::Pollcast => self.token.as_deref(),
            Style::Nchan => None,
        };
        let result = self
            .client
            .send(|| self.client.request(None, token, Some(self.body(seq))))
            .await;
        match result {
            Ok(reply) if (200..300).contains(&reply.status) => {
                if let Some(bits) = self.ok_bits.get((seq / 64) as usize) {
                    bits.fetch_or(1 << (seq % 64), Ordering::Relaxed);
                }
                if let Some(id) = number_after(&reply.body, b"\"id\":\"") {
                    self.min_id.fetch_min(id, Ordering::Relaxed);
                    self.max_id.fetch_max(id, Ordering::Relaxed);
                }
                self.ok.fetch_add(1, Ordering::Relaxed);
                self.max_ok_seq.fetch_max(seq as i64, Ordering::Release);
            }
            Ok(reply) => {
                self.non_2xx.fetch_add(1, Ordering::Relaxed);
                *self
                    .statuses
                    .lock()
                    .expect("statuses")
                    .entry(reply.status)
                    .or_default() += 1;
            }
            Err(error) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                *self.error_kinds.lock().expect("errors").entry(error).or_default() += 1;
            }
        }
    }

    /// Sends seq `i` at `start + i / rate` for every planned seq, then
    /// waits for the POSTs still in flight.
    pub async fn open_loop(self: &Arc<Self>, rate: f64, max_in_flight: usize) {
        let max_in_flight = max_in_flight.max(1);
        let permits = Arc::new(Semaphore::new(max_in_flight));
        let start = Instant::now();
        for seq in 0..self.planned {
            let due = start + Duration::from_secs_f64(seq as f64 / rate);
            let now = Instant::now();
            if now < due {
                tokio::time::sleep_until(due).await;
            }
            let lag = Instant::now().saturating_duration_since(due);
            self.lag_max_us
                .fetch_max(lag.as_micros() as u64, Ordering::Relaxed);
            match Arc::clone(&permits).try_acquire_owned() {
                Ok(permit) => {
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        me.publish(seq).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    self.skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let _ = permits.acquire_many(max_in_flight as u32).await;
    }

    /// Publishes every planned seq with `concurrency` workers, as fast as
    /// the server answers.
    pub async fn closed_loop(self: &Arc<Self>, concurrency: usize) {
        let next = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::with_capacity(concurrency);
        for _ in 0..concurrency {
            let me = Arc::clone(self);
            let next = Arc::clone(&next);
            workers.push(tokio::spawn(async move {
                loop {
                    let seq = next.fetch_add(1, Ordering::Relaxed);
                    if seq >= me.planned {
                        break;
                    }
                    me.publish(seq).await;
                }
            }));
        }
        for worker in workers {
            let _ = worker.await;
        }
    }

    pub fn summary(&self) -> Summary {
        let (min, max) = (
            self.min_id.load(Ordering::Relaxed),
            self.max_id.load(Ordering::Relaxed),
        );
        Summary {
            planned: self.planned,
            ok: self.ok.load(Ordering::Relaxed),
            non_2xx: self.non_2xx.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            ok_seqs: Bits::from_words(self.ok_bits.iter().map(|w| w.load(Ordering::Relaxed)).collect()),
            lag_max_ms: self.lag_max_us.load(Ordering::Relaxed) as f64 / 1000.0,
            statuses: self.statuses.lock().expect("statuses").clone(),
            error_kinds: self.error_kinds.lock().expect("errors").clone(),
            ids: (min <= max).then_some((min, max)),
        }
    }
}

/// Seqs an open loop at `rate` for `duration` sends.
pub fn planned(rate: f64, duration: Duration) -> u64 {
    ((rate * duration.as_secs_f64()).round() as u64).max(1)
}
