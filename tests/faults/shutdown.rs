//! SIGTERM: open streams end cleanly and the node exits within seconds,
//! while another node goes on serving the same events.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{http, publish, token, Database, Node, Sse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_and_the_node_exits_in_seconds() {
    let db = Database::create();
    let mut leaving = Node::start(&db.url, &[]).await;
    let staying = Node::start(&db.url, &[]).await;
    let url = leaving.url(&format!("/v1/events?topic=fault:a&access_token={}", token()));
    let mut streams = Vec::new();
    for _ in 0..50 {
        let mut stream = Sse::open(&url, None).await.unwrap();
        let first = stream.next_within(Duration::from_secs(5)).await.unwrap();
        assert_eq!(first.event, "connection:established");
        streams.push(stream);
    }
    let sent = publish(
        &http(),
        &staying.url(""),
        "fault:a",
        &json!({"type": "fault:said", "payload": {}}),
    )
    .await
    .unwrap();
    for stream in &mut streams {
        let event = stream.next_within(Duration::from_secs(5)).await.unwrap();
        assert_eq!(event.id, sent.to_string());
    }

    let asked = Instant::now();
    leaving.sigterm();
    let all_ended = tokio::time::timeout(Duration::from_secs(5), async {
        for stream in &mut streams {
            // Only the end of the body makes this `None` before a minute.
            while stream.next_within(Duration::from_secs(60)).await.is_some() {}
        }
    })
    .await;
    assert!(all_ended.is_ok(), "streams still open 5 s after SIGTERM");
    let status = leaving.exited_within(Duration::from_secs(10)).await;
    let took = asked.elapsed();
    assert!(status.is_some_and(|s| s.success()), "exit status {status:?}");
    assert!(took < Duration::from_secs(5), "took {took:?} to stop");
    eprintln!("SIGTERM with 50 open streams: exited after {took:?}");

    // The other node is unaffected.
    let later = publish(
        &http(),
        &staying.url(""),
        "fault:a",
        &json!({"type": "fault:said", "payload": {}}),
    )
    .await;
    assert!(later.is_ok());
}
