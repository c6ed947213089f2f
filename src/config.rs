//! Settings: command-line flags with `POLLCAST_*` environment fallbacks.
//! Durations are written like `15s`, `100ms`, `24h`. A bad value stops the
//! server at start with clap's message, which names the flag.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::keys::{KeySet, PublicKey};
use crate::auth::remote::RemoteSettings;
use crate::secret::{DatabaseUrl, Secret};

#[derive(Debug, Parser)]
#[command(
    name = "pollcast",
    version,
    about = "Real-time events over Server-Sent Events plus REST, durable in Postgres"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeConfig,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a signed access token (JWT) for the generic topic API.
    Token(TokenArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, env = "POLLCAST_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Postgres URL. Without it, events live in memory only.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,

    /// HS256 secret that signs the tokens pollcast issues (live polling)
    /// and checks HS256 tokens. Random per start when absent, so those
    /// tokens then die with the process and other nodes refuse them.
    /// Identity-provider tokens need none (--token-public-key, --token-jwks).
    #[arg(long, env = "POLLCAST_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Option<Secret>,

    /// PEM file of an identity provider's public key (RSA, EC P-256 or
    /// Ed25519, or a certificate holding one) that verifies its tokens
    /// (RS256, ES256, EdDSA) beside the HS256 secret. Repeatable; read at
    /// start only.
    #[arg(long = "token-public-key", env = "POLLCAST_TOKEN_PUBLIC_KEY", value_name = "FILE", value_delimiter = ',', value_parser = load_public_key)]
    pub token_public_keys: Vec<PublicKey>,

    /// JWKS file (the JSON an identity provider serves at its `jwks_uri`,
    /// saved): its signing keys verify tokens by their `kid`. Repeatable;
    /// read at start only, never fetched.
    #[arg(long = "token-jwks", env = "POLLCAST_TOKEN_JWKS", value_name = "FILE", value_delimiter = ',', value_parser = load_jwks)]
    pub token_jwks: Vec<KeySet>,

    /// An identity provider's JWKS URL (its `jwks_uri`): fetched at start,
    /// every --token-jwks-refresh, and at once (at most every 10 s) when a
    /// token names a `kid` it does not have, so that the provider's key
    /// rotation needs no restart. Repeatable. A failed fetch keeps the
    /// last keys.
    #[arg(long = "token-jwks-url", env = "POLLCAST_TOKEN_JWKS_URL", value_name = "URL", value_delimiter = ',', value_parser = parse_jwks_url)]
    pub token_jwks_urls: Vec<String>,

    /// How often each --token-jwks-url is fetched again.
    #[arg(long, env = "POLLCAST_TOKEN_JWKS_REFRESH", default_value = "5m", value_parser = parse_duration)]
    pub token_jwks_refresh: Duration,

    /// Identity-provider tokens must name one of these in `aud`
    /// (repeatable). Set it when the provider signs tokens for other
    /// applications too: without it, their tokens would be accepted here.
    #[arg(
        long = "token-audience",
        env = "POLLCAST_TOKEN_AUDIENCE",
        value_name = "AUD",
        value_delimiter = ','
    )]
    pub token_audience: Vec<String>,

    /// Identity-provider tokens must carry one of these as `iss`
    /// (repeatable).
    #[arg(
        long = "token-issuer",
        env = "POLLCAST_TOKEN_ISSUER",
        value_name = "ISS",
        value_delimiter = ','
    )]
    pub token_issuer: Vec<String>,

    /// Interval of `: ping` comments on every stream.
    #[arg(long, env = "POLLCAST_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// How long events stay replayable before retention drops them.
    #[arg(long, env = "POLLCAST_RETENTION", default_value = "24h", value_parser = parse_duration)]
    pub retention: Duration,

    /// Reconnection delay sent to clients in the stream's `retry:` line.
    #[arg(long, env = "POLLCAST_RETRY", default_value = "2s", value_parser = parse_duration)]
    pub retry: Duration,

    /// Allowed CORS origin for browsers on other origins (repeatable; `*` for any).
    #[arg(long = "cors-origin", env = "POLLCAST_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Serve successful SSE streams directly on the socket instead of
    /// through hyper (about 10 KiB less memory per idle stream); `false`
    /// sends every request through hyper.
    #[arg(long, env = "POLLCAST_DIRECT_STREAMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub direct_streams: bool,

    /// Frames queued per stream before a slow subscriber is disconnected.
    #[arg(long, env = "POLLCAST_SUBSCRIBER_BUFFER", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub subscriber_buffer: u32,

    /// Recent frames each node keeps in memory for attaching and reconnecting
    /// streams without reading the database.
    #[arg(long, env = "POLLCAST_RING_SIZE", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub ring_size: u32,

    /// …and at most this many bytes of them (the ring drops its oldest
    /// frames past either limit).
    #[arg(long, env = "POLLCAST_RING_BYTES", default_value_t = 32 << 20, value_parser = clap::value_parser!(u64).range(65_536..))]
    pub ring_bytes: u64,

    /// Memory store only: most events kept. Past it (or past
    /// --memory-max-bytes) the oldest are dropped, as retention drops them
    /// on Postgres: a client resuming from one gets `connection:reset`.
    #[arg(long, env = "POLLCAST_MEMORY_MAX_EVENTS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_max_events: u64,

    /// Memory store only: most bytes of events kept (payloads, topics and
    /// the rest of each event, roughly).
    #[arg(long, env = "POLLCAST_MEMORY_MAX_BYTES", default_value_t = 64 << 20, value_parser = clap::value_parser!(u64).range(65_536..))]
    pub memory_max_bytes: u64,

    /// Memory store only: most live polling rows (sessions, polls,
    /// participants, votes, idempotency keys). They cannot be dropped like
    /// old events, so past it new ones are refused with 507 `storage_full`.
    #[arg(long, env = "POLLCAST_MEMORY_MAX_ROWS", default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_max_rows: u64,

    /// Live polling: at most one results broadcast per poll per interval.
    #[arg(long, env = "POLLCAST_RESULTS_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub results_interval: Duration,

    /// Live polling: how long a participant with no open stream still counts
    /// as present.
    #[arg(long, env = "POLLCAST_GRACE_PERIOD", default_value = "10s", value_parser = parse_duration)]
    pub grace_period: Duration,

    /// The address the audience opens, as they type it
    /// (`https://poll.example.org`, or with a path prefix behind a proxy):
    /// join links are built from it and printed at start. Without it the
    /// web app builds them from the presenter's own address bar.
    #[arg(long, env = "POLLCAST_PUBLIC_URL", value_parser = PublicUrl::parse)]
    pub public_url: Option<PublicUrl>,

    /// Live polling: when set, creating a session requires this key
    /// (`X-Admin-Key` header or bearer).
    #[arg(long, env = "POLLCAST_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<Secret>,

    /// Live polling: the stream rows of a node that stopped heartbeating
    /// (it crashed) expire after this long; it heartbeats every third of it.
    #[arg(long, env = "POLLCAST_PRESENCE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub presence_ttl: Duration,

    /// Live polling: votes per second one participant may submit.
    #[arg(long, env = "POLLCAST_VOTE_RATE", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub vote_rate: u32,

    /// Publishes per second one token (its `sub`, or the token itself) may
    /// make on generic topics, shared out among the live nodes.
    #[arg(long, env = "POLLCAST_PUBLISH_RATE", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub publish_rate: u32,

    /// Streams one token (its `sub`, or the token itself) may hold open on a
    /// node at once.
    #[arg(long, env = "POLLCAST_STREAMS_PER_TOKEN", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub streams_per_token: u32,

    /// Most topic selectors one stream (or history read) may follow,
    /// rooms joined later included.
    #[arg(long, env = "POLLCAST_MAX_TOPICS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_topics: u32,

    /// How long a client may take to send a request head: from the accept
    /// (or the first byte of a later request on a kept-alive connection) to
    /// the blank line ending the head. Past it the connection is closed.
    #[arg(long, env = "POLLCAST_HEAD_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub head_timeout: Duration,

    /// How long a kept-alive connection may stay open between requests
    /// without sending anything.
    #[arg(long, env = "POLLCAST_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// How long a request body may take to arrive once its handler reads
    /// it; past it the request gets 408 `request_timeout`.
    #[arg(long, env = "POLLCAST_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Open connections on this node, all kinds together. At the cap a new
    /// connection evicts the one that has waited longest for a request, or
    /// gets an immediate 503 when all are busy. 0: the open-files limit
    /// minus a reserve for the database, logs and the web app's files.
    #[arg(long, env = "POLLCAST_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: u32,

    /// Open connections from one peer address (429 past it). Several people
    /// behind one NAT share an address: raise it for a large room on one
    /// network. Trusted proxies are exempt.
    #[arg(long, env = "POLLCAST_MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_address: u32,

    /// Open streams whose client has one address (its own, or, through a
    /// trusted proxy, the forwarded one): anonymous session watchers
    /// included. 429 past it.
    #[arg(long, env = "POLLCAST_STREAMS_PER_ADDRESS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub streams_per_address: u32,

    /// A proxy (address or CIDR block, repeatable) whose `X-Forwarded-For`
    /// names the real client, for the per-address limits.
    #[arg(long = "trusted-proxy", env = "POLLCAST_TRUSTED_PROXY", value_delimiter = ',', value_parser = parse_ip_net)]
    pub trusted_proxies: Vec<crate::net::IpNet>,

    /// Replay reads from the store a node runs at once for reconnecting
    /// streams; the others wait their turn, in order. Keeps a reconnect
    /// storm from taking every database connection.
    #[arg(long, env = "POLLCAST_MAX_CATCHUPS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_catchups: u32,

    /// Largest request body in bytes (the contract's 64 KiB by default).
    #[arg(long, env = "POLLCAST_MAX_BODY", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(1024..=16_777_216))]
    pub max_body: u32,

    /// How often each node sends `system:status` on the topic `system`
    /// (and checks its database for `system:alert`).
    #[arg(long, env = "POLLCAST_STATUS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub status_interval: Duration,

    /// How often a node looks for events committed by other nodes even when
    /// no notification arrived.
    #[arg(long, env = "POLLCAST_TAIL_POLL", default_value = "1s", value_parser = parse_duration)]
    pub tail_poll: Duration,

    /// How often a node looks for publishes made from SQL
    /// (`pollcast.publish`) waiting in the outbox: half of it is their
    /// average wait. Each look is one small query, about 1.3 % of a core
    /// per idle node at 25 ms here (BENCHMARKS.md).
    #[arg(long, env = "POLLCAST_OUTBOX_POLL", default_value = "25ms", value_parser = parse_duration)]
    pub outbox_poll: Duration,

    /// How long a node's claim on a webhook lasts without renewal (renewed
    /// every third of it): after a node dies, another delivers its
    /// webhooks within about this long.
    #[arg(long, env = "POLLCAST_WEBHOOK_LEASE", default_value = "5s", value_parser = parse_duration)]
    pub webhook_lease: Duration,

    /// Deadline of one webhook POST, connecting included.
    #[arg(long, env = "POLLCAST_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub webhook_timeout: Duration,

    /// The longest wait before the first retry of a failed webhook
    /// delivery; it doubles with each failure (full jitter below it).
    #[arg(long, env = "POLLCAST_WEBHOOK_RETRY_BASE", default_value = "500ms", value_parser = parse_duration)]
    pub webhook_retry_base: Duration,

    /// The cap of that doubling wait.
    #[arg(long, env = "POLLCAST_WEBHOOK_RETRY_MAX", default_value = "30s", value_parser = parse_duration)]
    pub webhook_retry_max: Duration,

    /// Consecutive failures after which a webhook is `failing`.
    #[arg(long, env = "POLLCAST_WEBHOOK_FAILING_AFTER", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub webhook_failing_after: u32,

    /// How often a `failing` webhook is tried.
    #[arg(long, env = "POLLCAST_WEBHOOK_FAILING_RETRY", default_value = "60s", value_parser = parse_duration)]
    pub webhook_failing_retry: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The server's secret (the same as its --token-secret).
    #[arg(long, env = "POLLCAST_TOKEN_SECRET", hide_env_values = true)]
    pub token_secret: Secret,

    /// Subject: who the token speaks for.
    #[arg(long)]
    pub sub: Option<String>,

    /// Topic selector the token may publish to (repeatable).
    #[arg(long)]
    pub publish: Vec<String>,

    /// Topic selector the token may subscribe to (repeatable).
    #[arg(long)]
    pub subscribe: Vec<String>,

    /// Tenant: every topic the token names is that tenant's, invisible to
    /// every other tenant.
    #[arg(long)]
    pub tenant: Option<String>,

    /// How long the token is valid.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub ttl: Duration,

    /// The token's id (`jti`), by which an admin can revoke it; a random
    /// UUID by default.
    #[arg(long)]
    pub jti: Option<String>,
}

fn load_public_key(path: &str) -> Result<PublicKey, String> {
    crate::auth::keys::load_pem_file(path)
}

fn load_jwks(path: &str) -> Result<KeySet, String> {
    crate::auth::keys::load_jwks_file(path)
}

/// `--token-jwks-url`: an absolute `http` or `https` URL.
fn parse_jwks_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("give the provider's jwks_uri, an http:// or https:// URL".into());
    }
    Ok(url.to_string())
}

fn parse_ip_net(raw: &str) -> Result<crate::net::IpNet, String> {
    crate::net::IpNet::parse(raw)
}

/// Parses `15s`, `100ms`, `24h`, `1h 30m`; zero is refused, since every
/// duration here is an interval or a window.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(raw.trim())
        .map_err(|e| format!("{e} (write durations like 15s, 100ms or 24h)"))?;
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(duration)
}

impl ServeConfig {
    /// Every identity-provider key: the PEM files', then the JWKS files'.
    pub fn public_keys(&self) -> Vec<PublicKey> {
        let from_sets = self.token_jwks.iter().flat_map(|set| set.keys.iter());
        self.token_public_keys
            .iter()
            .chain(from_sets)
            .map(|key| key.clone().expecting(&self.token_audience, &self.token_issuer))
            .collect()
    }

    /// What to fetch for `--token-jwks-url`, checked like the files' keys.
    pub fn remote_keys(&self) -> RemoteSettings {
        RemoteSettings {
            urls: self.token_jwks_urls.clone(),
            refresh: self.token_jwks_refresh,
            audience: self.token_audience.clone(),
            issuer: self.token_issuer.clone(),
        }
    }

    /// The defaults, listening on an ephemeral port: what tests start from.
    pub fn for_tests() -> Self {
        let cli = Cli::parse_from(["pollcast", "--listen", "127.0.0.1:0"]);
        let mut config = cli.serve;
        // Tests must not inherit a developer's environment.
        config.database_url = None;
        config.token_secret = None;
        config.token_public_keys.clear();
        config.token_jwks.clear();
        config.token_jwks_urls.clear();
        config.token_audience.clear();
        config.token_issuer.clear();
        config.cors_origins.clear();
        config.admin_key = None;
        config.trusted_proxies.clear();
        config
    }
}

/// `--public-url`: an absolute `http` or `https` URL with a host and no
/// query, fragment or credentials, kept without its trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    pub fn parse(raw: &str) -> Result<PublicUrl, String> {
        let url = url::Url::parse(raw.trim())
            .map_err(|e| format!("not a URL ({e}): give e.g. https://poll.example.org"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("the public URL must start with http:// or https://".into());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the public URL needs a host".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("the public URL may not carry a query or a fragment".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the public URL may not carry credentials".into());
        }
        Ok(PublicUrl(url.as_str().trim_end_matches('/').to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where a participant joins a session by its code.
    pub fn join_url(&self, code: &str) -> String {
        let code: String = form_urlencoded::byte_serialize(code.as_bytes()).collect();
        format!("{}/join?code={code}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn a_bad_value_names_its_flag() {
        let err = Cli::try_parse_from(["pollcast", "--heartbeat", "often"]).unwrap_err();
        assert!(err.to_string().contains("--heartbeat"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let cli = Cli::parse_from([
            "pollcast",
            "--database-url",
            "postgres://pollcast:db-password-1@db.internal:5432/events",
            "--token-secret",
            "token-secret-2",
            "--admin-key",
            "admin-key-3",
        ]);
        let shown = format!("{:?} {:#?}", cli, cli.serve);
        for secret in ["db-password-1", "token-secret-2", "admin-key-3"] {
            assert!(!shown.contains(secret), "{secret} printed in {shown}");
        }
        // Still useful: where the database is, and that the others are set.
        assert!(
            shown.contains("db.internal") && shown.contains("events"),
            "{shown}"
        );
        assert!(shown.contains("Secret([redacted])"), "{shown}");
        assert_eq!(
            cli.serve.token_secret.as_ref().map(Secret::expose),
            Some("token-secret-2")
        );
        assert_eq!(
            cli.serve.admin_key.as_ref().map(Secret::expose),
            Some("admin-key-3")
        );

        let token = Cli::parse_from(["pollcast", "token", "--token-secret", "token-secret-4"]);
        let shown = format!("{token:?}");
        assert!(!shown.contains("token-secret-4"), "{shown}");
    }

    #[test]
    fn a_key_file_that_cannot_be_used_stops_the_start_naming_flag_and_file() {
        let dir = std::env::temp_dir().join(format!("pollcast-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_a_key = dir.join("not-a-key.pem");
        std::fs::write(&not_a_key, "hello").unwrap();
        let missing = dir.join("missing.json");
        for (flag, path, why) in [
            ("--token-public-key", &not_a_key, "not a PEM file"),
            ("--token-jwks", &missing, "cannot read"),
            ("--token-jwks", &not_a_key, "not a JWKS"),
        ] {
            let path = path.to_str().unwrap();
            let err = Cli::try_parse_from(["pollcast", flag, path])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(flag) && err.contains(path) && err.contains(why),
                "{err}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_public_url_is_an_absolute_web_address_without_query() {
        let url = PublicUrl::parse("https://poll.example.org/").unwrap();
        assert_eq!(url.as_str(), "https://poll.example.org");
        assert_eq!(url.join_url("AB12"), "https://poll.example.org/join?code=AB12");
        let behind = PublicUrl::parse("http://10.0.0.5:8080/pollcast/").unwrap();
        assert_eq!(
            behind.join_url("x y"),
            "http://10.0.0.5:8080/pollcast/join?code=x+y"
        );
        for bad in [
            "poll.example.org",
            "ftp://x.org",
            "https://x.org/?a=1",
            "https://x.org/#f",
            "https://u:p@x.org",
            "",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad} was accepted");
        }
    }
}
