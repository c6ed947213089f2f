//! The SSE stream: live delivery, selectors, replay with Last-Event-ID,
//! the replay/live seam, resets, heartbeats, slow subscribers, shutdown.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{data, ids, Backend, TestApp};
use crate::on_both_stores;

async fn streams_open_with_the_contract_headers_and_first_frame(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut client = app.subscribe(&["demo:a"], None).await;
    assert_eq!(client.headers["content-type"], "text/event-stream");
    assert_eq!(client.headers["cache-control"], "no-cache");
    assert_eq!(client.headers["x-accel-buffering"], "no");
    assert!(client.headers.get("content-encoding").is_none());
    let first = client.next().await;
    assert_eq!(first.event, "connection:established");
    assert!(first.id.is_empty(), "transient frames carry no id");
    assert_eq!(first.retry, Some(Duration::from_secs(2)));
    let frame = data(&first);
    assert_eq!(frame["type"], "connection:established");
    assert!(frame["payload"]["connectionId"].as_str().unwrap().len() == 36);
    assert!(frame["payload"]["serverVersion"].is_string());
    assert!(frame.get("id").is_none());
}
on_both_stores!(opening, streams_open_with_the_contract_headers_and_first_frame);

async fn published_events_reach_every_matching_subscriber_in_id_order(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut exact = app.subscribe(&["demo:a"], None).await;
    let mut wildcard = app.subscribe(&["demo:*"], None).await;
    let mut two_exact = app.subscribe(&["demo:a", "demo:b"], None).await;
    let mut unrelated = app.subscribe(&["other:x"], None).await;
    for client in [&mut exact, &mut wildcard, &mut two_exact, &mut unrelated] {
        assert_eq!(client.next().await.event, "connection:established");
    }
    let a1 = app.publish("demo:a", "demo:said", json!({"n": 1})).await;
    let b1 = app.publish("demo:b", "demo:said", json!({"n": 2})).await;
    let deep = app.publish("demo:a:deep", "demo:said", json!({"n": 3})).await;
    let a2 = app.publish("demo:a", "demo:said", json!({"n": 4})).await;
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap().parse::<i64>().unwrap();

    assert_eq!(ids(&exact.stored(2).await), vec![id(&a1), id(&a2)]);
    let seen = wildcard.stored(3).await;
    assert_eq!(
        ids(&seen),
        vec![id(&a1), id(&b1), id(&a2)],
        "`*` is one segment: not demo:a:deep"
    );
    assert_eq!(ids(&two_exact.stored(3).await), vec![id(&a1), id(&b1), id(&a2)]);
    assert!(unrelated.next_within(Duration::from_millis(300)).await.is_none());
    let _ = deep;

    // The frame carries the full envelope, and the SSE fields agree with it.
    let envelope = data(&seen[0]);
    assert_eq!(envelope, a1);
    assert_eq!(seen[0].event, "demo:said");
    assert_eq!(envelope["topic"], "demo:a");
    assert_eq!(envelope["payload"], json!({"n": 1}));
}
on_both_stores!(
    live_delivery,
    published_events_reach_every_matching_subscriber_in_id_order
);

async fn a_subscriber_sees_only_what_its_token_allows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.token(&[], &["demo:allowed", "demo:also"]);
    let mut client = app.subscribe_with(&token, &["demo:*"], None).await;
    client.next().await;
    app.publish("demo:secret", "demo:said", json!({})).await;
    let allowed = app.publish("demo:allowed", "demo:said", json!({})).await;
    let event = client.next_stored().await;
    assert_eq!(event.id, allowed["id"].as_str().unwrap());
}
on_both_stores!(token_scope, a_subscriber_sees_only_what_its_token_allows);

async fn reconnecting_with_last_event_id_replays_exactly_what_was_missed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut published = Vec::new();
    for n in 0..10 {
        let topic = if n % 2 == 0 { "demo:a" } else { "other:b" };
        published.push(app.publish(topic, "demo:said", json!({ "n": n })).await);
    }
    let id_of = |i: usize| published[i]["id"].as_str().unwrap().to_string();
    let on_a: Vec<i64> = published
        .iter()
        .filter(|e| e["topic"] == "demo:a")
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();

    // Header form: resume after the third event.
    let mut client = app.subscribe(&["demo:a"], Some(&id_of(2))).await;
    let hello = client.next().await;
    assert_eq!(hello.event, "connection:reconnected");
    assert_eq!(data(&hello)["payload"]["replayFrom"], id_of(2));
    let expected: Vec<i64> = on_a
        .iter()
        .copied()
        .filter(|id| *id > id_of(2).parse().unwrap())
        .collect();
    assert_eq!(data(&hello)["payload"]["replayCount"], expected.len());
    assert_eq!(ids(&client.stored(expected.len()).await), expected);
    // …and then it is live.
    let live = app.publish("demo:a", "demo:said", json!({"n": "live"})).await;
    assert_eq!(client.next_stored().await.id, live["id"].as_str().unwrap());

    // Query form.
    let response = app
        .http
        .get(app.url("/v1/events"))
        .query(&[("topic", "demo:a"), ("lastEventId", &id_of(0))])
        .bearer_auth(app.demo_token())
        .send()
        .await
        .unwrap();
    let mut by_query = crate::helpers::SseClient::new(response);
    assert_eq!(by_query.next().await.event, "connection:reconnected");
    let replayed = ids(&by_query.stored(on_a.len() - 1 + 1).await);
    let mut want: Vec<i64> = on_a[1..].to_vec();
    want.push(live["id"].as_str().unwrap().parse().unwrap());
    assert_eq!(replayed, want);
}
on_both_stores!(
    replay,
    reconnecting_with_last_event_id_replays_exactly_what_was_missed
);

async fn the_header_wins_over_the_query_parameter(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.publish("demo:a", "demo:said", json!({})).await;
    let second = app.publish("demo:a", "demo:said", json!({})).await;
    let response = app
        .http
        .get(app.url("/v1/events"))
        .query(&[("topic", "demo:a"), ("lastEventId", "0")])
        .header("Last-Event-ID", first["id"].as_str().unwrap())
        .bearer_auth(app.demo_token())
        .send()
        .await
        .unwrap();
    let mut client = crate::helpers::SseClient::new(response);
    assert_eq!(client.next().await.event, "connection:reconnected");
    assert_eq!(client.next_stored().await.id, second["id"].as_str().unwrap());
}
on_both_stores!(header_wins, the_header_wins_over_the_query_parameter);

/// Replays far more than the hub's ring holds while publishers keep going:
/// the stream must show every id once, in order, across the seam.
async fn the_replay_live_seam_has_no_gap_and_no_duplicate_under_load(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.ring_size = 16).await;
    for n in 0..300 {
        app.publish("demo:a", "demo:said", json!({ "n": n })).await;
    }
    let publisher = {
        let base = app.base.clone();
        let token = app.demo_token();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut ids = Vec::new();
            for n in 0..200 {
                let response = http
                    .post(format!("{base}/v1/topics/demo:a/events"))
                    .bearer_auth(&token)
                    .json(&json!({"type": "demo:said", "payload": {"late": n}}))
                    .send()
                    .await
                    .unwrap();
                let body: serde_json::Value = response.json().await.unwrap();
                ids.push(body["id"].as_str().unwrap().parse::<i64>().unwrap());
            }
            ids
        })
    };
    let mut client = app.subscribe(&["demo:a"], Some("0")).await;
    assert_eq!(client.next().await.event, "connection:reconnected");
    let late_ids = publisher.await.unwrap();
    let last = *late_ids.last().unwrap();
    let mut seen = Vec::new();
    while seen.last().copied().unwrap_or(0) < last {
        seen.push(client.next_stored().await.id.parse::<i64>().unwrap());
    }
    assert_eq!(seen.len(), 500, "every event exactly once");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "strictly increasing ids");
    for id in late_ids {
        assert!(seen.contains(&id));
    }
}
on_both_stores!(seam, the_replay_live_seam_has_no_gap_and_no_duplicate_under_load);

async fn ids_older_than_retention_unknown_or_malformed_get_a_reset(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.retention = Duration::from_millis(300)).await;
    let old = app.publish("demo:a", "demo:said", json!({})).await;
    // A second old event: the client below has seen `old` but missed this
    // one, which retention drops.
    app.publish("demo:a", "demo:said", json!({})).await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // retention runs every 100 ms here
    let fresh = app.publish("demo:a", "demo:said", json!({})).await;

    let mut client = app
        .subscribe(&["demo:a"], Some(old["id"].as_str().unwrap()))
        .await;
    let reset = client.next().await;
    assert_eq!(reset.event, "connection:reset");
    assert!(reset.id.is_empty());
    let payload = &data(&reset)["payload"];
    assert_eq!(payload["reason"], "expired");
    assert_eq!(payload["lastEventId"], old["id"]);
    assert_eq!(payload["snapshotUrl"], "/v1/events/history?topic=demo%3Aa");
    // The stream goes on live after the reset.
    let next = app.publish("demo:a", "demo:said", json!({})).await;
    assert_eq!(client.next_stored().await.id, next["id"].as_str().unwrap());
    let _ = fresh;

    let mut unknown = app.subscribe(&["demo:a"], Some("999999999")).await;
    let frame = unknown.next().await;
    assert_eq!(frame.event, "connection:reset");
    assert_eq!(data(&frame)["payload"]["reason"], "unknown");

    let mut malformed = app.subscribe(&["demo:a"], Some("not-an-id")).await;
    let frame = malformed.next().await;
    assert_eq!(frame.event, "connection:reset");
    assert_eq!(data(&frame)["payload"]["reason"], "malformed");
}
on_both_stores!(reset, ids_older_than_retention_unknown_or_malformed_get_a_reset);

#[tokio::test]
async fn heartbeats_are_comment_lines_at_the_configured_interval() {
    let app = TestApp::spawn_with(Backend::Memory, |c| c.heartbeat = Duration::from_millis(200)).await;
    let mut response = app
        .http
        .get(app.url("/v1/events?topic=demo:a"))
        .bearer_auth(app.demo_token())
        .send()
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut text = String::new();
    while started.elapsed() < Duration::from_millis(1100) {
        if let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_millis(300), response.chunk())
            .await
            .map(|r| r.unwrap())
        {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    let pings = text.matches(": ping\n\n").count();
    assert!(
        (4..=6).contains(&pings),
        "expected about 5 pings in 1.1 s, got {pings}: {text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_never_make_a_subscriber_see_ids_out_of_order() {
    for backend in [Backend::Memory, Backend::Postgres] {
        let app = TestApp::spawn(backend).await;
        let mut wildcard = app.subscribe(&["demo:*"], None).await;
        let mut exact = app.subscribe(&["demo:w0"], None).await;
        wildcard.next().await;
        exact.next().await;
        let writers = 8;
        let per_writer = 40;
        let mut tasks = Vec::new();
        for w in 0..writers {
            let base = app.base.clone();
            let token = app.demo_token();
            tasks.push(tokio::spawn(async move {
                // One HTTP client per writer: several connections at once.
                let http = reqwest::Client::new();
                for n in 0..per_writer {
                    let response = http
                        .post(format!("{base}/v1/topics/demo:w{w}/events"))
                        .bearer_auth(&token)
                        .json(&json!({"type": "demo:said", "payload": {"w": w, "n": n}}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 201);
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let seen = ids(&wildcard.stored(writers * per_writer).await);
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "{backend:?}: ids out of order"
        );
        let per_topic = exact.stored(per_writer).await;
        let ns: Vec<i64> = per_topic
            .iter()
            .map(|e| data(e)["payload"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(
            ns,
            (0..per_writer as i64).collect::<Vec<_>>(),
            "{backend:?}: per-writer order kept"
        );
    }
}

/// A client that sends its request and never reads: the server must cut
/// it off once its buffer is full instead of queueing without bound, on
/// the direct path and through hyper alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_cut_off() {
    a_subscriber_that_stops_reading_is_cut_off_on(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_cut_off_through_hyper() {
    a_subscriber_that_stops_reading_is_cut_off_on(false).await;
}

async fn a_subscriber_that_stops_reading_is_cut_off_on(direct: bool) {
    let app = TestApp::spawn_with(Backend::Memory, |c| {
        c.subscriber_buffer = 8;
        c.direct_streams = direct;
    })
    .await;
    let addr = app.server().addr();
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/events?topic=demo:a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        app.demo_token()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    // Wait until the stream is attached to the hub.
    let hub = &app.server().state().hub;
    for _ in 0..100 {
        if hub.subscriber_count() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hub.subscriber_count(), 1);
    let big = "x".repeat(32 * 1024);
    let mut published = 0;
    while hub.subscriber_count() > 0 && published < 2000 {
        app.publish("demo:a", "demo:said", json!({ "pad": big })).await;
        published += 1;
    }
    assert_eq!(
        hub.subscriber_count(),
        0,
        "still attached after {published} events of 32 KiB"
    );
    // The connection is closed: after what the kernel buffered, EOF.
    let mut sink = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the server closed the connection");
    // Other subscribers are unaffected.
    let mut healthy = app.subscribe(&["demo:a"], None).await;
    healthy.next().await;
    let next = app.publish("demo:a", "demo:said", json!({})).await;
    assert_eq!(healthy.next_stored().await.id, next["id"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_streams_within_seconds() {
    let mut app = TestApp::spawn(Backend::Postgres).await;
    let mut client = app.subscribe(&["demo:a"], None).await;
    client.next().await;
    let started = std::time::Instant::now();
    app.stop().await;
    assert!(
        client.ends_within(Duration::from_secs(1)).await,
        "the stream ended"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
}

/// Two nodes on one database: an event published on one reaches a
/// subscriber of the other (NOTIFY wakes it; the table is the truth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_the_same_database_delivers_every_event() {
    let first = TestApp::spawn(Backend::Postgres).await;
    let mut config = crate::helpers::test_config();
    config.database_url = Some(first.db.as_ref().unwrap().url.clone().into());
    config.tail_poll = Duration::from_secs(60); // only NOTIFY can wake it in time
    let second = TestApp::start(config, None).await;
    let mut on_second = second.subscribe(&["demo:a"], None).await;
    on_second.next().await;
    let mut published = Vec::new();
    for n in 0..20 {
        let node = if n % 2 == 0 { &first } else { &second };
        published.push(node.publish("demo:a", "demo:said", json!({ "n": n })).await);
    }
    let want: Vec<i64> = published
        .iter()
        .map(|e| e["id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids(&on_second.stored(20).await), want);
}

#[tokio::test]
async fn cors_preflight_allows_last_event_id_for_configured_origins() {
    let app = TestApp::spawn_with(Backend::Memory, |c| {
        c.cors_origins = vec!["http://app.example".into()]
    })
    .await;
    let response = app
        .http
        .request(reqwest::Method::OPTIONS, app.url("/v1/events?topic=demo:a"))
        .header("Origin", "http://app.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "last-event-id")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://app.example"
    );
    let allowed = response.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(allowed.contains("last-event-id"), "{allowed}");
}
