//! The node census behind the admin console: which nodes share the store,
//! when each last sent its heartbeat, and what each holds right now (open
//! streams, and live streams per topic selector).
//!
//! Asked, not published: an admin's look sends one `censusQuery` on the
//! cluster bus and every other node answers with its own report, split in
//! parts small enough for NOTIFY; the asker waits for as many answers as
//! the heartbeats count live nodes, at most [`CENSUS_WAIT`]. So nothing is
//! written per stream or per heartbeat, and the numbers are those of the
//! moment of the look rather than of the last heartbeat. The cost is that
//! a node that does not answer in time is listed from its heartbeat alone
//! (`answered: false`). The heartbeats themselves are the `nodes` table
//! that live polling's presence keeps (the memory store keeps none: its one
//! node is the process).
//!
//! A node lists at most [`TOP_SELECTORS`] selectors, the most followed
//! ones, and counts the rest: with personal topics (`user:<sub>`) on every
//! stream a node can follow as many selectors as it holds streams.
//!
//! Its messages ride the same bus as `crate::cluster`'s under kinds of
//! their own; each listener skips the other's. Counts come from the hub:
//! a stream still replaying is not attached yet and is not counted on its
//! topics until it goes live (it is in `streams`, though).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::event::{EventId, NewEvent, StoredEvent};
use crate::domain::topic::{tenant_of, without_tenant};
use crate::fanout::hub::Hub;
use crate::store::{query, Command, EventStore, StoreError, Tx};
use crate::streams::OpenStreams;

/// How long a census waits for the other nodes' reports.
pub const CENSUS_WAIT: Duration = Duration::from_millis(700);
/// Most selectors one node reports, the most followed first.
pub const TOP_SELECTORS: usize = 200;
/// Selectors per bus message: NOTIFY payloads stop at 8,000 bytes and a
/// selector may take 256 bytes, plus its tenant's 66.
const SELECTORS_PER_MESSAGE: usize = 15;

/// Live streams on one selector (its internal name: `~acme:orders:*` is
/// tenant acme's `orders:*`; `""` is every topic).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectorCount {
    pub selector: String,
    pub streams: usize,
}

/// What one node holds, as it told it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub node_id: Uuid,
    pub version: String,
    pub started_at: DateTime<Utc>,
    /// Open streams: every SSE response in progress.
    pub streams: usize,
    /// Of those, the ones attached to the hub (live, not replaying).
    pub live_streams: usize,
    /// The highest event id this node has delivered.
    pub head: EventId,
    pub selectors: Vec<SelectorCount>,
    /// Selectors followed but left out of `selectors` (past [`TOP_SELECTORS`]).
    pub other_selectors: usize,
}

/// One node in the admin's list: its heartbeat, its report, or both.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub node_id: Uuid,
    /// The node answering the request.
    pub this_node: bool,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub report: Option<NodeReport>,
}

/// Streams following one selector across the nodes that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicView {
    /// As its clients wrote it (without the tenant); `None`: every topic.
    pub selector: Option<String>,
    pub tenant: Option<String>,
    pub streams: usize,
    /// Streams per node that holds some.
    pub nodes: BTreeMap<Uuid, usize>,
}

/// A census: this node's report first, then whatever the others sent.
#[derive(Debug, Clone)]
pub struct Gathered {
    pub reports: Vec<NodeReport>,
    /// Every node the heartbeats count as alive answered in time.
    pub complete: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
enum Message {
    #[serde(rename_all = "camelCase")]
    CensusQuery { request_id: Uuid, from: Uuid },
    /// One part of a node's report: the first carries the report (its
    /// selectors empty), every part some selectors, the last `done`.
    #[serde(rename_all = "camelCase")]
    CensusPart {
        request_id: Uuid,
        to: Uuid,
        from: Uuid,
        report: Option<NodeReport>,
        selectors: Vec<SelectorCount>,
        done: bool,
    },
}

/// A report being put together from its parts.
type Part = (Uuid, Option<NodeReport>, Vec<SelectorCount>, bool);

pub struct Census {
    node_id: Uuid,
    started_at: DateTime<Utc>,
    store: Arc<dyn EventStore>,
    hub: Arc<Hub>,
    streams: Arc<OpenStreams>,
    /// Nodes alive on the store, from their heartbeats.
    live_nodes: watch::Receiver<usize>,
    /// Where the answers to each of this node's census queries go, while
    /// it waits for them.
    gathering: Mutex<HashMap<Uuid, mpsc::UnboundedSender<Part>>>,
}

/// Forgets a census query when its wait ends, however it ends: an admin's
/// request dropped in the middle of the wait included.
struct Forget<'a> {
    census: &'a Census,
    request_id: Uuid,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.census.gathering().remove(&self.request_id);
    }
}

impl Census {
    /// Starts answering other nodes' census queries until `stop`.
    pub fn start(
        node_id: Uuid,
        store: Arc<dyn EventStore>,
        hub: Arc<Hub>,
        streams: Arc<OpenStreams>,
        live_nodes: watch::Receiver<usize>,
        stop: CancellationToken,
    ) -> Arc<Self> {
        let census = Arc::new(Census {
            node_id,
            started_at: Utc::now(),
            store,
            hub,
            streams,
            live_nodes,
            gathering: Mutex::new(HashMap::new()),
        });
        tokio::spawn(Arc::clone(&census).listen(stop));
        census
    }

    pub fn node_id(&self) -> Uuid {
        self.node_id
    }

    /// What this node holds now.
    pub fn report(&self) -> NodeReport {
        let (selectors, other_selectors) = top_selectors(self.hub.selector_counts(), TOP_SELECTORS);
        NodeReport {
            node_id: self.node_id,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: self.started_at,
            streams: self.streams.len(),
            live_streams: self.hub.subscriber_count(),
            head: self.hub.high(),
            selectors,
            other_selectors,
        }
    }

    /// The nodes alive by their heartbeats, and when each last beat.
    pub async fn heartbeats(&self) -> Result<Vec<(Uuid, DateTime<Utc>)>, StoreError> {
        query(self.store.as_ref(), Heartbeats).await?
    }

    /// This node's report and the other nodes' (best effort: those that
    /// arrived within [`CENSUS_WAIT`]).
    pub async fn gather(&self) -> Gathered {
        let mut reports = vec![self.report()];
        let others = self.live_nodes.borrow().saturating_sub(1);
        if !self.store.is_shared() || others == 0 {
            return Gathered {
                reports,
                complete: true,
            };
        }
        let request_id = Uuid::new_v4();
        let (parts, mut incoming) = mpsc::unbounded_channel();
        self.gathering().insert(request_id, parts);
        let forget = Forget {
            census: self,
            request_id,
        };
        let asked = self
            .send(&Message::CensusQuery {
                request_id,
                from: self.node_id,
            })
            .await;
        let mut building: HashMap<Uuid, NodeReport> = HashMap::new();
        let mut finished = HashSet::new();
        if asked {
            let deadline = tokio::time::Instant::now() + CENSUS_WAIT;
            while finished.len() < others {
                match tokio::time::timeout_at(deadline, incoming.recv()).await {
                    Ok(Some((node, report, selectors, done))) => {
                        if let Some(report) = report {
                            building.entry(node).or_insert(report);
                        }
                        if let Some(report) = building.get_mut(&node) {
                            report.selectors.extend(selectors);
                        }
                        if done {
                            finished.insert(node);
                        }
                    }
                    _ => break,
                }
            }
        }
        drop(forget);
        let complete = finished.len() >= others;
        let mut others: Vec<NodeReport> = building
            .into_iter()
            .filter(|(node, _)| finished.contains(node))
            .map(|(_, report)| report)
            .collect();
        others.sort_by_key(|r| r.node_id);
        reports.extend(others);
        Gathered { reports, complete }
    }

    fn gathering(&self) -> MutexGuard<'_, HashMap<Uuid, mpsc::UnboundedSender<Part>>> {
        self.gathering.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn answer(&self, request_id: Uuid, to: Uuid) {
        let mut report = self.report();
        let selectors = std::mem::take(&mut report.selectors);
        let mut chunks: Vec<Vec<SelectorCount>> = selectors
            .chunks(SELECTORS_PER_MESSAGE)
            .map(<[_]>::to_vec)
            .collect();
        if chunks.is_empty() {
            chunks.push(Vec::new());
        }
        let last = chunks.len() - 1;
        let mut report = Some(report);
        for (n, chunk) in chunks.into_iter().enumerate() {
            let part = Message::CensusPart {
                request_id,
                to,
                from: self.node_id,
                report: report.take(),
                selectors: chunk,
                done: n == last,
            };
            if !self.send(&part).await {
                return;
            }
        }
    }

    async fn send(&self, message: &Message) -> bool {
        super::bus::send_json(&*self.store, message, "census").await
    }

    async fn listen(self: Arc<Self>, stop: CancellationToken) {
        let mut messages = self.store.bus_messages();
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = messages.recv() => next,
            };
            match next {
                // Other kinds are `crate::cluster`'s: not ours to read.
                Ok(text) => {
                    if let Ok(message) = serde_json::from_str::<Message>(&text) {
                        self.handle(message).await;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    async fn handle(&self, message: Message) {
        match message {
            Message::CensusQuery { request_id, from } => {
                if from != self.node_id {
                    self.answer(request_id, from).await;
                }
            }
            Message::CensusPart {
                request_id,
                to,
                from,
                report,
                selectors,
                done,
            } => {
                if to != self.node_id {
                    return;
                }
                if let Some(parts) = self.gathering().get(&request_id) {
                    let _ = parts.send((from, report, selectors, done));
                }
            }
        }
    }
}

/// Reads the heartbeats on a read-only snapshot.
struct Heartbeats;

#[async_trait]
impl Command for Heartbeats {
    type Outcome = Result<Vec<(Uuid, DateTime<Utc>)>, StoreError>;
    type Decided = Self::Outcome;

    async fn run(&mut self, tx: &mut dyn Tx) -> Result<(Vec<NewEvent>, Self::Decided), StoreError> {
        Ok((Vec::new(), tx.node_heartbeats().await))
    }

    fn outcome(decided: Self::Decided, _: &[StoredEvent]) -> Self::Outcome {
        decided
    }
}

/// The `limit` most followed selectors (ties by name), and how many were
/// left out.
pub fn top_selectors(counts: HashMap<String, usize>, limit: usize) -> (Vec<SelectorCount>, usize) {
    let mut all: Vec<SelectorCount> = counts
        .into_iter()
        .map(|(selector, streams)| SelectorCount { selector, streams })
        .collect();
    all.sort_by(|a, b| {
        b.streams
            .cmp(&a.streams)
            .then_with(|| a.selector.cmp(&b.selector))
    });
    let left_out = all.len().saturating_sub(limit);
    all.truncate(limit);
    (all, left_out)
}

/// Every node known by its heartbeat or its report, this node first, the
/// others by id.
pub fn merge_nodes(
    this_node: Uuid,
    heartbeats: &[(Uuid, DateTime<Utc>)],
    reports: &[NodeReport],
) -> Vec<NodeView> {
    let mut nodes: BTreeMap<Uuid, NodeView> = BTreeMap::new();
    let view = |node_id: Uuid| NodeView {
        node_id,
        this_node: node_id == this_node,
        last_heartbeat: None,
        report: None,
    };
    for (node_id, at) in heartbeats {
        nodes
            .entry(*node_id)
            .or_insert_with(|| view(*node_id))
            .last_heartbeat = Some(*at);
    }
    for report in reports {
        nodes
            .entry(report.node_id)
            .or_insert_with(|| view(report.node_id))
            .report = Some(report.clone());
    }
    let mut list: Vec<NodeView> = nodes.into_values().collect();
    list.sort_by_key(|n| (!n.this_node, n.node_id));
    list
}

/// Streams per selector summed over the reports, the most followed first
/// (ties by tenant, then selector).
pub fn per_topic(reports: &[NodeReport]) -> Vec<TopicView> {
    let mut topics: HashMap<&str, TopicView> = HashMap::new();
    for report in reports {
        for count in &report.selectors {
            let name = count.selector.as_str();
            let view = topics.entry(name).or_insert_with(|| TopicView {
                selector: (!name.is_empty()).then(|| without_tenant(name).to_owned()),
                tenant: tenant_of(name).map(str::to_owned),
                streams: 0,
                nodes: BTreeMap::new(),
            });
            view.streams += count.streams;
            *view.nodes.entry(report.node_id).or_default() += count.streams;
        }
    }
    let mut list: Vec<TopicView> = topics.into_values().collect();
    list.sort_by(|a, b| {
        b.streams
            .cmp(&a.streams)
            .then_with(|| a.tenant.cmp(&b.tenant))
            .then_with(|| a.selector.cmp(&b.selector))
    });
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(node: u128, selectors: &[(&str, usize)]) -> NodeReport {
        NodeReport {
            node_id: Uuid::from_u128(node),
            version: "0".into(),
            started_at: DateTime::UNIX_EPOCH,
            streams: selectors.len(),
            live_streams: selectors.len(),
            head: 0,
            selectors: selectors
                .iter()
                .map(|(s, n)| SelectorCount {
                    selector: (*s).into(),
                    streams: *n,
                })
                .collect(),
            other_selectors: 0,
        }
    }

    #[test]
    fn a_node_reports_its_most_followed_selectors_and_counts_the_rest() {
        let counts = HashMap::from([
            ("a".to_string(), 1),
            ("b".into(), 5),
            ("c".into(), 5),
            ("d".into(), 2),
        ]);
        let (top, left_out) = top_selectors(counts, 3);
        let names: Vec<&str> = top.iter().map(|c| c.selector.as_str()).collect();
        assert_eq!(names, ["b", "c", "d"]);
        assert_eq!(left_out, 1);
    }

    #[test]
    fn topics_add_up_across_nodes_and_keep_their_tenant() {
        let reports = [
            report(1, &[("demo:a", 2), ("~acme:demo:a", 1), ("", 1)]),
            report(2, &[("demo:a", 3)]),
        ];
        let topics = per_topic(&reports);
        assert_eq!(topics[0].selector.as_deref(), Some("demo:a"));
        assert_eq!(topics[0].tenant, None);
        assert_eq!(topics[0].streams, 5);
        assert_eq!(topics[0].nodes[&Uuid::from_u128(2)], 3);
        let acme = topics
            .iter()
            .find(|t| t.tenant.as_deref() == Some("acme"))
            .unwrap();
        assert_eq!((acme.selector.as_deref(), acme.streams), (Some("demo:a"), 1));
        assert!(
            topics.iter().any(|t| t.selector.is_none() && t.streams == 1),
            "every topic"
        );
    }

    #[test]
    fn nodes_are_listed_from_heartbeats_and_reports_this_node_first() {
        let now = Utc::now();
        let me = Uuid::from_u128(9);
        let heartbeats = [(Uuid::from_u128(1), now), (me, now)];
        let nodes = merge_nodes(me, &heartbeats, &[report(9, &[]), report(3, &[])]);
        let ids: Vec<u128> = nodes.iter().map(|n| n.node_id.as_u128()).collect();
        assert_eq!(ids, [9, 1, 3]);
        assert!(nodes[0].this_node && nodes[0].report.is_some() && nodes[0].last_heartbeat.is_some());
        assert!(nodes[1].report.is_none(), "silent: heartbeat only");
        assert!(
            nodes[2].last_heartbeat.is_none(),
            "answered before its first heartbeat"
        );
    }

    #[test]
    fn a_full_report_part_fits_in_a_notify() {
        let long = format!("~{}:{}", "t".repeat(64), "a".repeat(256));
        let part = Message::CensusPart {
            request_id: Uuid::nil(),
            to: Uuid::nil(),
            from: Uuid::nil(),
            report: Some(report(1, &[])),
            selectors: vec![
                SelectorCount {
                    selector: long,
                    streams: usize::MAX,
                };
                SELECTORS_PER_MESSAGE
            ],
            done: true,
        };
        assert!(serde_json::to_string(&part).unwrap().len() < 7_000);
    }
}
