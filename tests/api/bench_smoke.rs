//! A smoke run of the load generator against a real server, so the
//! benchmark tool cannot rot: a few subscribers, about a second of load.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{Backend, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generator_measures_a_short_fan_out() {
    let app = TestApp::spawn(Backend::Memory).await;
    let token = app.demo_token();
    let base = app.base.clone();
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
