//! Test harness: a real server on a port-0 listener, on a fresh Postgres
//! database per test (dropped afterwards) or on the memory store, and a
//! real SSE client reading the real stream.

use std::time::Duration;

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use pollcast::auth::{expiry_in, Claims, TokenKeys};
use pollcast::config::ServeConfig;
use pollcast::Server;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_postgres::NoTls;

pub const SECRET: &str = "test-secret";

/// The Postgres server the tests use; each test creates its own database on it.
pub fn admin_url() -> String {
    std::env::var("POLLCAST_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Postgres,
}

/// A database that exists for one test and is dropped when it ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let name = format!("pollcast_test_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_client().await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        let mut config: tokio_postgres::Config = admin_url().parse().unwrap();
        config.dbname(&name);
        let url = format!(
            "postgres://{}@{}:{}/{}",
            config.get_user().unwrap_or("postgres"),
            "127.0.0.1",
            config.get_ports().first().copied().unwrap_or(5432),
            name
        );
        TestDb { name, url }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect to test db");
        tokio::spawn(connection);
        client
    }
}

pub async fn admin_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&admin_url(), NoTls)
        .await
        .expect("Postgres must be reachable (make test starts it)");
    tokio::spawn(connection);
    client
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime guarantee: use a thread of our own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Ok((client, connection)) = tokio_postgres::connect(&admin_url(), NoTls).await {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub server: Option<Server>,
    pub base: String,
    pub http: reqwest::Client,
    pub keys: TokenKeys,
    pub db: Option<TestDb>,
}

pub fn test_config() -> ServeConfig {
    let mut config = ServeConfig::for_tests();
    config.token_secret = Some(SECRET.into());
    config.tail_poll = Duration::from_millis(200);
    config
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut ServeConfig)) -> TestApp {
        let mut config = test_config();
        let db = match backend {
            Backend::Memory => None,
            Backend::Postgres => Some(TestDb::create().await),
        };
        config.database_url = db.as_ref().map(|d| d.url.clone().into());
        adjust(&mut config);
        Self::start(config, db).await
    }

    /// Starts a server with exactly this config (and keeps `db` alive).
    pub async fn start(config: ServeConfig, db: Option<TestDb>) -> TestApp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::start(&config, listener).await.expect("server starts");
        TestApp {
            base: format!("http://{}", server.addr()),
            server: Some(server),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            keys: TokenKeys::new(
                config
                    .token_secret
                    .as_ref()
                    .map_or(SECRET, |s| s.expose())
                    .as_bytes(),
            ),
            db,
        }
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server running")
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A token allowed to publish and subscribe to these selectors.
    pub fn token(&self, publish: &[&str], subscribe: &[&str]) -> String {
        self.keys.mint(&Claims {
            sub: Some("tester".into()),
            exp: expiry_in(Duration::from_secs(3600)),
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
            ..Claims::default()
        })
    }

    /// A token for everything under `demo:*` and `other:*`.
    pub fn demo_token(&self) -> String {
        self.token(
            &["demo:*", "other:*", "demo:*:*"],
            &["demo:*", "other:*", "demo:*:*"],
        )
    }

    pub async fn publish_raw(&self, token: &str, topic: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/v1/topics/{topic}/events")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Publishes and returns the stored envelope; panics unless 201.
    pub async fn publish(&self, topic: &str, event_type: &str, payload: Value) -> Value {
        let response = self
            .publish_raw(
                &self.demo_token(),
                topic,
                json!({ "type": event_type, "payload": payload }),
            )
            .await;
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 201, "publish failed: {body}");
        body
    }

    /// How many events the history endpoint returns for this query string
    /// (read with the demo token, up to 1,000).
    pub async fn history_len(&self, query: &str) -> usize {
        self.history_with(&self.demo_token(), &format!("{query}&limit=1000"))
            .await
            .len()
    }

    /// The events the history endpoint returns to `token` for this query.
    pub async fn history_with(&self, token: &str, query: &str) -> Vec<Value> {
        let body: Value = self
            .http
            .get(self.url(&format!("/v1/events/history?{query}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body.as_array()
            .unwrap_or_else(|| panic!("not a list: {body}"))
            .clone()
    }

    /// The `/metrics` page, as Prometheus reads it.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// One sample of `/metrics` (`name{label="value"}` as the page writes
    /// it), 0 when absent. The recorder is the test process's, shared by
    /// every app in it: compare before and after, never to a constant.
    pub async fn metric(&self, sample: &str) -> f64 {
        let page = self.metrics().await;
        page.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().unwrap_or(0.0))
    }

    /// `GET path` with a bearer token.
    pub async fn get_with(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    /// Opens an SSE stream with the demo token.
    pub async fn subscribe(&self, selectors: &[&str], last_event_id: Option<&str>) -> SseClient {
        self.subscribe_with(&self.demo_token(), selectors, last_event_id)
            .await
    }

    pub async fn subscribe_with(
        &self,
        token: &str,
        selectors: &[&str],
        last_event_id: Option<&str>,
    ) -> SseClient {
        let query: Vec<(&str, &str)> = selectors.iter().map(|s| ("topic", *s)).collect();
        let mut request = self
            .http
            .get(self.url("/v1/events"))
            .query(&query)
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "subscribe failed");
        SseClient::new(response)
    }
}

/// A real SSE client: the response body parsed by `eventsource-stream`, an
/// implementation nobody here wrote.
pub struct SseClient {
    pub headers: reqwest::header::HeaderMap,
    events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>,
}

impl SseClient {
    pub fn new(response: reqwest::Response) -> Self {
        let headers = response.headers().clone();
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()));
        SseClient {
            headers,
            events: Box::pin(events),
        }
    }

    /// The next event, or `None` when the stream ended or nothing came in time.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Event> {
        match tokio::time::timeout(wait, self.events.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            _ => None,
        }
    }

    pub async fn next(&mut self) -> Event {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("an event within 10 s")
    }

    /// The next stored event (one with an id), skipping transient frames.
    pub async fn next_stored(&mut self) -> Event {
        loop {
            let event = self.next().await;
            // Transient frames carry no id line, but a parser repeats the
            // last id it saw on them: tell them apart by type.
            let transient = event.event.starts_with("connection:") || event.event.starts_with("system:");
            if !event.id.is_empty() && !transient {
                return event;
            }
        }
    }

    /// Stored events until `count` of them have arrived.
    pub async fn stored(&mut self, count: usize) -> Vec<Event> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            events.push(self.next_stored().await);
        }
        events
    }

    /// Whether the server ends the stream within `wait`.
    pub async fn ends_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.events.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

pub fn data(event: &Event) -> Value {
    serde_json::from_str(&event.data).expect("data is one JSON document")
}

pub fn ids(events: &[Event]) -> Vec<i64> {
    events.iter().map(|e| e.id.parse().unwrap()).collect()
}

/// Runs a test body once on each backend.
#[macro_export]
macro_rules! on_both_stores {
    ($name:ident, $body:ident) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_memory() {
                $body($crate::helpers::Backend::Memory).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                $body($crate::helpers::Backend::Postgres).await;
            }
        }
    };
}
