//! Identity providers' keys fetched from their JWKS URL
//! (`--token-jwks-url`, the provider's `jwks_uri`), so that a provider
//! rotating its signing keys needs no restart here.
//!
//! Each URL is fetched at start (awaited, so tokens work as soon as the
//! server listens), then every `--token-jwks-refresh`, and at once when a
//! token is refused for a `kid` that no key has, which is how a rotation
//! shows itself: that token is refused (401), the fetch brings the new
//! key, and the client's next try passes. Such on-demand fetches are at most one
//! per [`ON_DEMAND_GAP`] per URL, so tokens with made-up `kid`s cannot
//! turn this node into a load on the provider.
//!
//! A fetch that fails (the provider down, an error status, a body that is
//! not a usable JWKS) changes nothing: the last good keys stay in force
//! and the fetch is tried again sooner ([`RETRY_FIRST`], doubling up to
//! the refresh interval). A set that differs from the last one replaces
//! it whole: keys the provider withdrew stop verifying as soon as a fetch
//! sees them gone, even for tokens verified before (the verified-token
//! cache is emptied). Logs show a URL without its credentials or query.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::keys::{jwks_keys, PublicKey};
use super::TokenKeys;
use crate::net::root_cause;

/// The least time between two fetches asked for by unknown `kid`s.
pub const ON_DEMAND_GAP: Duration = Duration::from_secs(10);
/// The wait after a first failed fetch; doubled after each failure, up to
/// the refresh interval.
pub const RETRY_FIRST: Duration = Duration::from_secs(2);
/// Deadline of one fetch, connecting included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS body read; providers' sets are a few KiB.
const MAX_BODY: usize = 1 << 20;

/// What to fetch and how the fetched keys check tokens.
#[derive(Debug, Clone)]
pub struct RemoteSettings {
    pub urls: Vec<String>,
    pub refresh: Duration,
    /// `--token-audience` and `--token-issuer`, as for the files' keys.
    pub audience: Vec<String>,
    pub issuer: Vec<String>,
}

/// Fetches every URL once (all at once, each within [`FETCH_TIMEOUT`]),
/// then keeps them fresh in the background until `stop`.
pub async fn start(keys: Arc<TokenKeys>, settings: RemoteSettings, stop: CancellationToken) {
    if settings.urls.is_empty() {
        return;
    }
    // A few redirects (a provider moving its keys), never from https down
    // to http: keys read in clear could be anyone's.
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let from_https = attempt.previous().first().is_some_and(|u| u.scheme() == "https");
        if attempt.previous().len() > 5 {
            attempt.error("more than 5 redirects")
        } else if from_https && attempt.url().scheme() != "https" {
            attempt.error("a redirect from https to http")
        } else {
            attempt.follow()
        }
    });
    let client = match reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .redirect(redirects)
        .user_agent(concat!("pollcast/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot start the HTTP client for --token-jwks-url; those keys are not fetched");
            return;
        }
    };
    let settings = Arc::new(settings);
    let mut fetchers = Vec::new();
    for url in &settings.urls {
        let mut fetcher = Fetcher {
            keys: Arc::clone(&keys),
            client: client.clone(),
            settings: Arc::clone(&settings),
            shown: shown(url),
            url: url.clone(),
            last_body: None,
        };
        fetchers.push(async move {
            let ok = fetcher.fetch().await;
            (fetcher, ok)
        });
    }
    for (fetcher, ok) in futures::future::join_all(fetchers).await {
        tokio::spawn(fetcher.follow(ok, stop.clone()));
    }
}

/// One URL's keys.
struct Fetcher {
    keys: Arc<TokenKeys>,
    client: reqwest::Client,
    settings: Arc<RemoteSettings>,
    url: String,
    /// The URL as logs show it: without credentials or query.
    shown: String,
    /// The body of the last good fetch: an unchanged set is not installed
    /// again (which would empty the verified-token cache for nothing).
    last_body: Option<String>,
}

impl Fetcher {
    /// Fetches again on time, on unknown `kid`s and after failures.
    async fn follow(mut self, mut ok: bool, stop: CancellationToken) {
        let refresh = self.settings.refresh.max(Duration::from_secs(1));
        let mut retry = RETRY_FIRST;
        let mut last_on_demand: Option<Instant> = None;
        let mut unknown_kids = self.keys.unknown_kids();
        unknown_kids.mark_unchanged();
        loop {
            let wait = if ok { refresh } else { retry.min(refresh) };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                Ok(()) = unknown_kids.changed() => {
                    if let Some(at) = last_on_demand {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep_until(at + ON_DEMAND_GAP) => {}
                        }
                    }
                    last_on_demand = Some(Instant::now());
                }
            }
            // What was refused until now, this fetch answers; refusals
            // from here on ask for the next one.
            unknown_kids.mark_unchanged();
            ok = self.fetch().await;
            retry = if ok { RETRY_FIRST } else { (retry * 2).min(refresh) };
        }
    }

    /// One fetch; installs the keys when they changed. Whether it worked.
    async fn fetch(&mut self) -> bool {
        let body = match get(&self.client, &self.url).await {
            Ok(body) => body,
            Err(why) => {
                tracing::warn!(url = %self.shown, error = %why, "cannot fetch a JWKS; the keys it gave before, if any, stay in force");
                crate::metrics::jwks_fetched("failed");
                return false;
            }
        };
        if self.last_body.as_deref() == Some(body.as_str()) {
            crate::metrics::jwks_fetched("unchanged");
            return true;
        }
        match keys_of(&body, &self.shown, &self.settings) {
            Ok(keys) => {
                let kids: Vec<String> = keys.iter().map(|k| format!("{:?}", k.kid)).collect();
                tracing::info!(url = %self.shown, kids = %kids.join(" "), "verifying tokens with the keys of a JWKS URL");
                self.keys.replace_fetched_keys(&self.url, keys);
                self.last_body = Some(body);
                crate::metrics::jwks_fetched("changed");
                true
            }
            Err(why) => {
                tracing::warn!(error = %why, "a JWKS URL gave no usable key set; the keys it gave before, if any, stay in force");
                crate::metrics::jwks_fetched("failed");
                false
            }
        }
    }
}

/// A URL as logs may show it: credentials and query taken out.
fn shown(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// The signing keys of a fetched set (named after `origin`), checked as
/// the files' keys are.
fn keys_of(body: &str, origin: &str, settings: &RemoteSettings) -> Result<Vec<PublicKey>, String> {
    Ok(jwks_keys(body, origin)?
        .keys
        .into_iter()
        .map(|key| key.expecting(&settings.audience, &settings.issuer))
        .collect())
}

/// The body of a 2xx answer to `GET url`, at most [`MAX_BODY`] bytes.
async fn get(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| root_cause(&e))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status().as_u16()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| root_cause(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("the answer is larger than {} KiB", MAX_BODY / 1024));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "the answer is not UTF-8 text".into())
}
