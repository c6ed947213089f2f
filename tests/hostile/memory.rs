//! The embedded default must not be a way to exhaust the machine.
//! Publishing 50 KB events while 20 subscribers stalled once took the
//! memory store from 9 MB to 1.29 GB in 20 s. Here the real binary (on its
//! default budgets) takes the same flood, and its resident memory is
//! sampled from /proc throughout.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollcast::auth::{expiry_in, Claims, TokenKeys};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const SECRET: &str = "memory-flood-secret";
/// What the flood may cost at most: the store's 64 MiB and the ring's
/// 32 MiB of default budgets, the frames queued for subscribers about to
/// be dropped, and the process around them. Unbounded, it passed a
/// gigabyte.
const RSS_CEILING_MIB: u64 = 320;

struct Server {
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

async fn start() -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_pollcast"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--token-secret", SECRET])
        .args(["--publish-rate", "1000000", "--max-body", "262144"])
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pollcast");
    let server = Server { child, port };
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_store_stays_inside_its_budget_under_a_flood() {
    let server = start().await;
    let pid = server.child.id();
    let token = TokenKeys::new(SECRET.as_bytes()).mint(&Claims {
        sub: Some("flood".into()),
        exp: expiry_in(Duration::from_secs(600)),
        publish: vec!["flood:*".into()],
        subscribe: vec!["flood:*".into()],
        ..Claims::default()
    });
    // Twenty subscribers that open their stream and never read it.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut socket = TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
        let head = format!("GET /v1/events?topic=flood:a&access_token={token} HTTP/1.1\r\nHost: x\r\n\r\n");
        socket.write_all(head.as_bytes()).await.unwrap();
        stalled.push(socket);
    }
    let start_rss = rss_mib(pid);
    let payload = json!({"type": "flood:chunk", "payload": {"blob": "x".repeat(50_000)}});
    let body = Arc::new(serde_json::to_vec(&payload).unwrap());
    let published = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let url = format!("http://127.0.0.1:{}/v1/topics/flood:a/events", server.port);
    // Enough to pass both budgets several times over: 4,000 × 50 KB is
    // 200 MB of payload, framed again in the ring.
    const TARGET: usize = 4_000;
    let publishers: Vec<_> = (0..8)
        .map(|_| {
            let (body, published, done, url, token) = (
                Arc::clone(&body),
                Arc::clone(&published),
                Arc::clone(&done),
                url.clone(),
                token.clone(),
            );
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !done.load(Ordering::Relaxed) && published.load(Ordering::Relaxed) < TARGET {
                    let response = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body.as_ref().clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 201);
                    published.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut peak = start_rss;
    let deadline = Instant::now() + Duration::from_secs(60);
    while published.load(Ordering::Relaxed) < TARGET && Instant::now() < deadline {
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done.store(true, Ordering::Relaxed);
    for publisher in publishers {
        publisher.await.unwrap();
    }
    peak = peak.max(rss_mib(pid));
    let count = published.load(Ordering::Relaxed);
    assert!(count >= TARGET, "the flood got through: {count} publishes");
    eprintln!("memory flood: {count} × 50 KB published, RSS {start_rss} MiB at start, {peak} MiB at peak");
    assert!(
        peak < RSS_CEILING_MIB,
        "RSS reached {peak} MiB (from {start_rss}) for {count} × 50 KB events"
    );
    // The oldest events are gone, as retention would drop them: a client
    // asking for one is told to resync.
    let response = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/v1/events?topic=flood:a",
            server.port
        ))
        .bearer_auth(&token)
        .header("Last-Event-ID", "1")
        .send()
        .await
        .unwrap();
    let mut first = response.bytes_stream();
    let chunk = tokio::time::timeout(Duration::from_secs(5), futures::StreamExt::next(&mut first))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&chunk);
    assert!(
        text.contains("connection:reset") && text.contains("\"expired\""),
        "{text}"
    );
    drop(stalled);
}

/// Live polling rows cannot be dropped like old events: past the row budget
/// new ones are refused with 507, and what exists keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_row_budget_the_memory_store_refuses_new_rows() {
    let app =
        crate::helpers::TestApp::spawn_with(crate::helpers::Backend::Memory, |c| c.memory_max_rows = 3).await;
    let session = crate::polling_helpers::create_session(&app, "one").await;
    session.start(&app).await;
    session.join(&app, Some("a")).await;
    session.join(&app, Some("b")).await;
    let (status, body) =
        crate::polling_helpers::post(&app, None, "/v1/sessions", json!({"title": "two"})).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "storage_full");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("DATABASE_URL"),
        "{body}"
    );
    // Reads and events that add no row still work.
    assert_eq!(session.snapshot(&app).await["participantCount"], 2);
    assert_eq!(
        app.publish("demo:a", "demo:said", json!({})).await["topic"],
        "demo:a"
    );
}
