//! Memory stays bounded under the clients that cost a server most: one
//! that never reads, thousands that sit idle, and many that ask for a long
//! replay and hang up half-way. Meanwhile a healthy subscriber still gets
//! its events promptly.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{http, publish, raise_fd_limit, token, Database, Follower, Node};

const IDLE: usize = 2_000;
const FLOOD: usize = 2_000;
const QUITTERS: usize = 40;
const PAYLOAD: usize = 4 * 1024;

/// Sends a stream request and waits for the response head.
async fn raw_stream(port: u16, query: &str, last_event_id: Option<i64>) -> TcpStream {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let request = format!(
        "GET /v1/events?{query}&access_token={} HTTP/1.1\r\nHost: x\r\n{resume}\r\n",
        token()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    socket
}

async fn read_some(socket: &mut TcpStream, bytes: usize) {
    let mut buffer = vec![0u8; 16 * 1024];
    let mut read = 0;
    while read < bytes {
        match tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => read += n,
            _ => panic!("the stream stopped after {read} bytes"),
        }
    }
}

/// Publishes `count` events of [`PAYLOAD`] bytes on `fault:flood`.
async fn flood(base: &str, count: usize) -> i64 {
    let http = http();
    let pad = "x".repeat(PAYLOAD);
    let mut last = 0;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (http, base, pad) = (http.clone(), base.to_owned(), pad.clone());
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in (w..count).step_by(8) {
                let body = json!({ "type": "fault:pad", "payload": { "i": i, "pad": pad } });
                last = last.max(publish(&http, &base, "fault:flood", &body).await.unwrap());
            }
            last
        }));
    }
    for task in tasks {
        last = last.max(task.await.unwrap());
    }
    last
}

/// Clients that ask for everything from the start and leave after a bit.
async fn quitters(port: u16) {
    let mut tasks = Vec::new();
    for _ in 0..QUITTERS {
        tasks.push(tokio::spawn(async move {
            let mut socket = raw_stream(port, "topic=fault:flood", Some(0)).await;
            read_some(&mut socket, 64 * 1024).await;
            drop(socket);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// How long an event takes from publish to a healthy subscriber.
async fn delivery_time(node: &Node, healthy: &mut Follower) -> Duration {
    let started = Instant::now();
    let id = publish(
        &http(),
        &node.url(""),
        "fault:ping",
        &json!({"type": "fault:ping", "payload": {}}),
    )
    .await
    .unwrap();
    assert!(
        healthy
            .read_until(Duration::from_secs(10), |seen| seen
                .last()
                .is_some_and(|s| s.id >= id))
            .await
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_idle_and_quitting_clients_keep_memory_bounded() {
    raise_fd_limit();
    let db = Database::create();
    let node = Node::start(&db.url, &["--subscriber-buffer", "64", "--ring-size", "1024"]).await;
    let url = node.url(&format!("/v1/events?topic=fault:ping&access_token={}", token()));
    let mut healthy = Follower::open(vec![url]).await;
    let quiet = delivery_time(&node, &mut healthy).await;
    let baseline = node.rss_kib();

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(raw_stream(node.port, "topic=fault:idle", None).await);
    }
    for socket in &mut idle {
        read_some(socket, 1).await;
    }
    let with_idle = node.rss_kib();
    // A subscriber to the flood that never reads a byte.
    let _stalled = raw_stream(node.port, "topic=fault:flood", None).await;

    let mut after_round = Vec::new();
    let mut slowest = quiet;
    // Four identical rounds. What a round leaves behind in the allocator
    // varies by up to ~10 MiB from round to round on a busy machine (seen:
    // 46 to 60 MiB, in any order), while a leak of what a round moves (its
    // 8 MiB of events, or the quitters' replay buffers) would add at least
    // 8 MiB per round, 24 MiB from the first round to the fourth.
    for _round in 0..4 {
        flood(&node.url(""), FLOOD).await;
        quitters(node.port).await;
        slowest = slowest.max(delivery_time(&node, &mut healthy).await);
        after_round.push(node.rss_kib());
    }
    let per_idle = (with_idle.saturating_sub(baseline)) as f64 / IDLE as f64;
    eprintln!(
        "RSS KiB: baseline {baseline}, with {IDLE} idle streams {with_idle} ({per_idle:.1} per stream), \
         after flood+quitters rounds {after_round:?}; delivery {quiet:?} quiet, {slowest:?} at worst"
    );
    assert!(per_idle < 16.0, "{per_idle:.1} KiB per idle stream");
    // The ring holds 1,024 frames of ~4 KiB; everything else a round
    // allocates must be given back: the fourth round ends where the first
    // ones did, give or take allocator slack.
    let first = after_round[0].min(after_round[1]);
    let last = after_round[3];
    assert!(
        last < first + 16 * 1024,
        "memory grew from {first} to {last} KiB over identical rounds: {after_round:?}"
    );
    assert!(
        last < with_idle + 64 * 1024,
        "rounds of stalled and quitting clients cost {} KiB",
        last - with_idle
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a healthy subscriber waited {slowest:?}"
    );
    // The idle streams are all still open; the stalled and quitting ones
    // are gone.
    let mut open = 0;
    for _ in 0..50 {
        open = node_subscribers(&node).await;
        if open == IDLE + 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open, IDLE + 1, "open streams: the idle ones and the healthy one");
}

/// Open streams, from the node's metrics.
async fn node_subscribers(node: &Node) -> usize {
    let text = http()
        .get(node.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("pollcast_connections "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as usize)
        .expect("pollcast_connections in /metrics")
}
