//! Keys fetched from an identity provider's JWKS URL (`--token-jwks-url`),
//! against a real local HTTP server standing in for the provider, with
//! keys and tokens made by `openssl`. What an operator relies on: the keys
//! work as soon as the server listens; the provider rotating its keys
//! needs no restart (a token naming the new `kid` is refused once, then
//! accepted) and the withdrawn key stops working, even for a token already
//! used; tokens with made-up `kid`s do not make the server hammer the
//! provider; a provider that is down or answers garbage leaves the last
//! keys in force; one that is down at start does not stop the start.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::Response;
use serde_json::{json, Value};

use crate::helpers::{Backend, TestApp};
use crate::idp_keys::{claims, in_an_hour, open, streams_and_publishes, KeyPair, Kind, Scratch};
use crate::local_http::serve;

#[derive(Default)]
struct Served {
    /// The JWKS served with 200, or `None` to answer 500.
    jwks: Option<String>,
    requests: usize,
}

/// The provider's `jwks_uri`.
struct Provider {
    url: String,
    served: Arc<Mutex<Served>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Provider {
    async fn start(jwks: Value) -> Provider {
        let served = Arc::new(Mutex::new(Served {
            jwks: Some(jwks.to_string()),
            requests: 0,
        }));
        let shared = Arc::clone(&served);
        let (addr, task) = serve(move |_request| {
            let served = Arc::clone(&shared);
            async move {
                let mut served = served.lock().unwrap();
                served.requests += 1;
                let mut response =
                    Response::new(Full::new(Bytes::from(served.jwks.clone().unwrap_or_default())));
                if served.jwks.is_none() {
                    *response.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                }
                response
            }
        })
        .await;
        Provider {
            url: format!("http://{addr}/.well-known/jwks.json"),
            served,
            task,
        }
    }

    /// From now on, answer with this text (`None`: with 500).
    fn answer(&self, body: Option<String>) {
        self.served.lock().unwrap().jwks = body;
    }

    fn requests(&self) -> usize {
        self.served.lock().unwrap().requests
    }
}

async fn app_fetching(url: &str, refresh: Duration) -> TestApp {
    let url = url.to_owned();
    TestApp::spawn_with(Backend::Memory, move |c| {
        c.token_jwks_urls = vec![url];
        c.token_jwks_refresh = refresh;
    })
    .await
}

/// A token of `key`, named by `kid`, with its own `jti`.
fn token(scratch: &Scratch, key: &KeyPair, kid: &str) -> String {
    let jti = uuid::Uuid::new_v4().to_string();
    let header = json!({"alg": key.alg(), "kid": kid, "typ": "JWT"});
    scratch.sign(key, header, &claims("ann", &jti, in_an_hour()))
}

/// The status of `GET /v1/events` with `token` once it is `want`, or the
/// last one seen after `within`.
async fn status_becomes(app: &TestApp, token: &str, want: u16, within: Duration) -> u16 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, _) = open(app, token).await;
        if status == want || tokio::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_rotating_its_keys_needs_no_restart() {
    let scratch = Scratch::new();
    let old = scratch.keypair("old", Kind::Rsa);
    let new = scratch.keypair("new", Kind::Ed25519);
    let provider = Provider::start(json!({"keys": [scratch.jwk(&old, "2026-a")]})).await;

    // Given a server fetching the provider's keys: they work at once.
    let app = app_fetching(&provider.url, Duration::from_secs(3600)).await;
    assert_eq!(provider.requests(), 1, "fetched once, at start");
    let changed = app.metric(CHANGED).await;
    let before = token(&scratch, &old, "2026-a");
    streams_and_publishes(&app, &before, "idp:before").await;

    // When the provider rotates to a new key: a token naming it is refused
    // once (its kid is unknown), which fetches the set again; then it
    // passes, with no restart.
    provider.answer(Some(json!({"keys": [scratch.jwk(&new, "2026-b")]}).to_string()));
    let after = token(&scratch, &new, "2026-b");
    let (first, error) = open(&app, &after).await;
    assert_eq!(first, 401, "{error}");
    assert_eq!(
        status_becomes(&app, &after, 200, Duration::from_secs(5)).await,
        200
    );
    streams_and_publishes(&app, &after, "idp:after").await;
    assert_eq!(provider.requests(), 2);

    // The withdrawn key no longer verifies, not even the token used before.
    let (status, error) = open(&app, &before).await;
    assert_eq!(status, 401, "{error}");

    assert!(app.metric(CHANGED).await > changed, "the new set is counted");

    // Tokens with made-up kids are refused without a fetch each: at most
    // one more, ten seconds after the last on-demand fetch.
    let seen = provider.requests();
    for i in 0..20 {
        let (status, _) = open(&app, &token(&scratch, &new, &format!("made-up-{i}"))).await;
        assert_eq!(status, 401);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(provider.requests() <= seen + 1, "no fetch per made-up kid");
}

const CHANGED: &str = "pollcast_jwks_fetches_total{result=\"changed\"}";
const FAILED: &str = "pollcast_jwks_fetches_total{result=\"failed\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_is_down_leaves_the_last_keys_in_force() {
    let scratch = Scratch::new();
    let key = scratch.keypair("key", Kind::P256);
    let provider = Provider::start(json!({"keys": [scratch.jwk(&key, "k1")]})).await;
    let app = app_fetching(&provider.url, Duration::from_secs(1)).await;
    assert_eq!(open(&app, &token(&scratch, &key, "k1")).await.0, 200);

    // When the provider answers 500, then garbage, across several refreshes,
    // then the keys fetched before still verify new tokens.
    let failed = app.metric(FAILED).await;
    provider.answer(None);
    let seen = provider.requests();
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    assert!(provider.requests() > seen, "refreshed meanwhile");
    assert_eq!(open(&app, &token(&scratch, &key, "k1")).await.0, 200);
    provider.answer(Some(r#"{"keys": "none today"}"#.into()));
    let seen = provider.requests();
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    assert!(provider.requests() > seen, "refreshed meanwhile");
    assert_eq!(open(&app, &token(&scratch, &key, "k1")).await.0, 200);
    assert!(app.metric(FAILED).await >= failed + 2.0, "failures are counted");
}

/// Given a JWKS URL where nothing listens, the server starts all the same:
/// its own HS256 tokens work, the provider's tokens are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_down_at_start_does_not_stop_the_start() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let app = app_fetching(&format!("http://{closed}/jwks.json"), Duration::from_secs(3600)).await;
    let (status, _) = open(&app, &app.token(&["idp:*"], &["idp:*"])).await;
    assert_eq!(status, 200);
    let scratch = Scratch::new();
    let key = scratch.keypair("key", Kind::Ed25519);
    let (status, error) = open(&app, &token(&scratch, &key, "k1")).await;
    assert_eq!(status, 401, "{error}");
}
