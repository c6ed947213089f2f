//! Real processes for the fault tests: pollcast nodes started from the
//! built binary, databases on the shared Postgres, a private Postgres that
//! may be stopped and restarted, and an SSE reader that follows one stream
//! across reconnects the way EventSource does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use eventsource_stream::{Event, Eventsource};
use futures::{Stream, StreamExt};
use pollcast::auth::{expiry_in, Claims, TokenKeys};
use serde_json::Value;

pub const SECRET: &str = "fault-test-secret";

/// The shared Postgres the tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("POLLCAST_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A token allowed to publish and subscribe to `fault:*`.
pub fn token() -> String {
    TokenKeys::new(SECRET.as_bytes()).mint(&Claims {
        sub: Some("fault-tester".into()),
        exp: expiry_in(Duration::from_secs(3600)),
        publish: vec!["fault:*".into()],
        subscribe: vec!["fault:*".into()],
        ..Claims::default()
    })
}

/// A token that may read the server's own topic `system`.
pub fn system_token() -> String {
    TokenKeys::new(SECRET.as_bytes()).mint(&Claims {
        sub: Some("operator".into()),
        exp: expiry_in(Duration::from_secs(3600)),
        subscribe: vec!["system".into()],
        ..Claims::default()
    })
}

/// Collects the `data` of every frame of `event_type` on a stream, in the
/// background, until the stream ends.
pub fn collect_frames(url: String, event_type: &'static str) -> std::sync::Arc<std::sync::Mutex<Vec<Value>>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        let Ok(response) = http().get(&url).send().await else {
            return;
        };
        let mut events = response.bytes_stream().eventsource();
        while let Some(Ok(event)) = events.next().await {
            if event.event == event_type {
                if let Ok(data) = serde_json::from_str::<Value>(&event.data) {
                    sink.lock().unwrap().push(data);
                }
            }
        }
    });
    seen
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Lets this process and its children hold thousands of sockets.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a stack value.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

// ---------------------------------------------------------------- database --

/// A database on the shared Postgres for one test, dropped at the end.
pub struct Database {
    pub name: String,
    pub url: String,
}

impl Database {
    pub fn create() -> Database {
        let name = format!("pollcast_fault_{}", uuid::Uuid::new_v4().simple());
        psql(&admin_url(), &format!("CREATE DATABASE {name}"));
        let url = format!("{}/{name}", admin_url().rsplit_once('/').unwrap().0);
        Database { name, url }
    }

    pub fn query(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &admin_url(),
                "-Atqc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Runs one statement with psql and returns its unaligned output.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-Atqc", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A Postgres server of the test's own (initdb in a temporary directory on
/// a free port), so it can be stopped and restarted without touching
/// anyone else's.
pub struct PrivatePostgres {
    dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let bin = postgres_bin_dir();
        let dir = std::env::temp_dir().join(format!("pollcast-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let pg = PrivatePostgres {
            dir,
            port: free_port(),
            bin,
        };
        as_postgres_user(&pg.dir);
        pg.run(&[
            "initdb",
            "-D",
            &pg.data(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]);
        pg.up();
        pg
    }

    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn up(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        self.run(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-l",
            &log.display().to_string(),
            "-o",
            &options,
            "-w",
            "start",
        ]);
    }

    /// Stops it the hard way: no checkpoint, connections cut (a crash, as
    /// far as clients can tell; the restart replays the WAL).
    pub fn crash(&self) {
        self.run(&["pg_ctl", "-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, args: &[&str]) {
        let program = self.bin.join(args[0]);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let out = command.args(&args[1..]).output().expect("run a Postgres tool");
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// initdb refuses to run as root: the directory goes to `postgres`.
fn as_postgres_user(dir: &Path) {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn postgres_bin_dir() -> PathBuf {
    let out = Command::new("pg_config").arg("--bindir").output();
    if let Ok(out) = out {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres installed under /usr/lib/postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("an initdb")
}

// -------------------------------------------------------------------- node --

/// One pollcast process.
pub struct Node {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
}

impl Node {
    /// Starts a node on `database_url` and waits until it is ready.
    pub async fn start(database_url: &str, extra: &[&str]) -> Node {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("pollcast-node-{port}-{}.log", std::process::id()));
        let child = Command::new(env!("CARGO_BIN_EXE_pollcast"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", database_url])
            .args(["--token-secret", SECRET])
            // One token plays every client here; the per-token limits are
            // tested in tests/api.
            .args(["--publish-rate", "1000000", "--streams-per-token", "1000000"])
            // Every client here comes from 127.0.0.1.
            .args([
                "--max-connections-per-address",
                "1000000",
                "--streams-per-address",
                "1000000",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start pollcast");
        let node = Node {
            child: Some(child),
            port,
            log,
        };
        node.wait_ready(Duration::from_secs(30)).await;
        node
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    async fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        let http = reqwest::Client::new();
        while Instant::now() < deadline {
            if let Ok(r) = http.get(self.url("/readyz")).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "node on {} not ready: {}",
            self.port,
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// `kill -9`: no shutdown, no goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn sigterm(&self) {
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc::kill(self.pid() as libc::pid_t, libc::SIGTERM);
        }
    }

    /// Waits for the process to exit on its own.
    pub async fn exited_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.log);
    }
}

// -------------------------------------------------------------------- http --

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap()
}

/// Publishes one event; `Ok(id)` when the server acknowledged it.
pub async fn publish(http: &reqwest::Client, node_url: &str, topic: &str, body: &Value) -> Result<i64, u16> {
    let response = http
        .post(format!("{node_url}/v1/topics/{topic}/events"))
        .bearer_auth(token())
        .json(body)
        .send()
        .await
        .map_err(|_| 0u16)?;
    let status = response.status().as_u16();
    if status != 201 {
        return Err(status);
    }
    let body: Value = response.json().await.map_err(|_| 0u16)?;
    Ok(body["id"].as_str().unwrap().parse().unwrap())
}

// --------------------------------------------------------------------- sse --

/// A stored event as a subscriber saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub id: i64,
    pub event: String,
    pub data: Value,
}

/// One SSE stream, read by `eventsource-stream`.
pub struct Sse {
    events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, String>> + Send>>,
}

impl Sse {
    /// Opens `url` (which carries its own token) from `last_event_id`.
    pub async fn open(url: &str, last_event_id: Option<i64>) -> Result<Sse, String> {
        let mut request = http().get(url);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        if response.status() != 200 {
            return Err(format!("status {}", response.status()));
        }
        let events = response
            .bytes_stream()
            .eventsource()
            .map(|r| r.map_err(|e| e.to_string()));
        Ok(Sse {
            events: Box::pin(events),
        })
    }

    /// The next event of any kind; `None` when the stream ended (or broke)
    /// or nothing came within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Event> {
        match tokio::time::timeout(wait, self.events.next()).await {
            Ok(Some(Ok(event))) => Some(event),
            _ => None,
        }
    }
}

/// Follows a stream the way EventSource does: when it ends, reopens it
/// (on the next URL of `urls`, as a load balancer would send it to another
/// node) with the last id seen, and keeps every stored event.
pub struct Follower {
    urls: Vec<String>,
    current: usize,
    stream: Option<Sse>,
    pub seen: Vec<Seen>,
    pub reconnects: usize,
    pub resets: usize,
    /// The id it was opened after, until it has seen one of its own.
    opened_after: Option<i64>,
}

impl Follower {
    pub async fn open(urls: Vec<String>) -> Follower {
        Self::open_after(urls, None).await
    }

    /// Opens the stream with `Last-Event-ID: after`: followers opened from
    /// the same id see the same events, however far apart they open.
    pub async fn open_after(urls: Vec<String>, after: Option<i64>) -> Follower {
        let mut follower = Follower {
            urls,
            current: 0,
            stream: None,
            seen: Vec::new(),
            reconnects: 0,
            resets: 0,
            opened_after: after,
        };
        follower.stream = Some(Sse::open(&follower.urls[0], after).await.expect("open a stream"));
        follower
    }

    pub fn last_id(&self) -> Option<i64> {
        self.seen.last().map(|s| s.id).or(self.opened_after)
    }

    /// Reads until `done` says the events seen are enough, reconnecting as
    /// needed; false if `within` passed first.
    pub async fn read_until(&mut self, within: Duration, done: impl Fn(&[Seen]) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while !done(&self.seen) {
            if Instant::now() >= deadline {
                return false;
            }
            let Some(stream) = self.stream.as_mut() else {
                self.reconnect().await;
                continue;
            };
            match stream.next_within(Duration::from_millis(500)).await {
                Some(event) => self.keep(event),
                None if self.stream_ended_or_idle().await => self.stream = None,
                None => {}
            }
        }
        true
    }

    fn keep(&mut self, event: Event) {
        if event.event == "connection:reset" {
            self.resets += 1;
        }
        if event.id.is_empty() || event.event.starts_with("connection:") {
            return;
        }
        let id: i64 = event.id.parse().expect("numeric id");
        if self.seen.last().is_some_and(|last| last.id == id) {
            return; // a transient frame re-carrying the last id
        }
        self.seen.push(Seen {
            id,
            event: event.event,
            data: serde_json::from_str(&event.data).expect("JSON data"),
        });
    }

    /// A read that returned nothing: either half a second of quiet or the
    /// end of the stream. A quick probe tells them apart.
    async fn stream_ended_or_idle(&mut self) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return true;
        };
        match tokio::time::timeout(Duration::from_millis(1), stream.events.next()).await {
            Err(_) => false,
            Ok(Some(Ok(event))) => {
                self.keep(event);
                false
            }
            Ok(_) => true,
        }
    }

    /// Reopens the stream like EventSource after its retry delay, trying
    /// the next URL each time, for up to 30 s (a Postgres restart, a node
    /// coming back).
    async fn reconnect(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.current = (self.current + 1) % self.urls.len();
            if let Ok(stream) = Sse::open(&self.urls[self.current], self.last_id()).await {
                self.stream = Some(stream);
                self.reconnects += 1;
                return;
            }
        }
        panic!("could not reconnect to any of {:?}", self.urls);
    }
}

/// Ids strictly increasing: no duplicates, order kept.
pub fn strictly_increasing(seen: &[Seen]) -> bool {
    seen.windows(2).all(|w| w[0].id < w[1].id)
}
