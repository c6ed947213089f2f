//! A smoke run of the load generator against a real server, so the
//! benchmark tool cannot rot: a few subscribers, about a second of load.
//! The server is pollcast's own (its library, on the memory store, on a
//! port-0 listener in this process); the load generator is the
//! `pollcast-bench` binary, run as a process of its own.

use std::process::Command;
use std::time::Duration;

use pollcast::auth::{expiry_in, Claims, TokenKeys};
use pollcast::config::ServeConfig;
use pollcast::Server;
use serde_json::Value;
use tokio::net::TcpListener;

const SECRET: &str = "test-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_measures_a_short_fan_out() {
    let mut config = ServeConfig::for_tests();
    config.token_secret = Some(SECRET.into());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start(&config, listener).await.expect("server starts");
    let base = format!("http://{}", server.addr());
    let selectors = vec!["demo:*".to_string()];
    let token = TokenKeys::new(SECRET.as_bytes()).mint(&Claims {
        sub: Some("tester".into()),
        exp: expiry_in(Duration::from_secs(3600)),
        publish: selectors.clone(),
        subscribe: selectors,
        ..Claims::default()
    });

    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_pollcast-bench"))
            .args([
                "--json",
                "fanout",
                "--subscribers",
                "5",
                "--rate",
                "20",
                "--duration",
                "1s",
            ])
            .args(["--warmup", "200ms", "--drain", "500ms"])
            .args([
                "--subscribe-url",
                &format!("{base}/v1/events?topic=demo:bench&access_token={token}"),
            ])
            .args(["--publish-url", &format!("{base}/v1/topics/demo:bench/events")])
            .args(["--publish-token", &token])
            .output()
            .expect("pollcast-bench runs")
    })
    .await
    .unwrap();
    server.stop().await;

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["subscribers"]["connected"], 5);
    let published = report["published"]["ok"].as_u64().unwrap();
    assert!(published >= 15, "published {published}");
    assert_eq!(report["deliveries"]["received"].as_u64().unwrap(), published * 5);
    assert_eq!(report["deliveries"]["delivered_percent"], 100.0);
    assert_eq!(report["deliveries"]["duplicates"], 0);
    assert!(report["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
}
