//! Small shared pieces: URLs, clocks, the per-thread latency histograms,
//! bit sets of sequence numbers, the server's RSS, the open-files limit.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// An `http://host:port/path?query` URL, resolved once.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `Host` header value.
    pub authority: String,
    /// Origin-form request target: `/path?query`.
    pub path: String,
    pub addr: SocketAddr,
}

impl Target {
    pub async fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let (host, port) = split_host_port(authority).ok_or_else(|| format!("{url}: bad host or port"))?;
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("{url}: cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: {host} has no address"))?;
        Ok(Target {
            authority: authority.to_string(),
            path,
            addr,
        })
    }

    /// The same server with another path.
    pub fn with_path(&self, path: &str) -> Target {
        Target {
            path: path.to_string(),
            ..self.clone()
        }
    }
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if rest.is_empty() => 80,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, port.parse().ok()?)),
        None => Some((authority, 80)),
    }
    .filter(|(host, _)| !host.is_empty())
}

/// The URL with any `access_token` value elided, for printing.
pub fn redact(url: &str) -> String {
    let Some(at) = url.find("access_token=") else {
        return url.to_string();
    };
    let start = at + "access_token=".len();
    let end = url[start..].find('&').map_or(url.len(), |i| start + i);
    format!("{}…{}", &url[..start], &url[end..])
}

/// Source addresses for `k` loopback IPs when the server is on loopback.
pub fn source_ips(server: &SocketAddr, k: u32) -> Vec<Ipv4Addr> {
    match server.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => (1..=k.clamp(1, 254))
            .map(|i| Ipv4Addr::new(127, 0, 0, i as u8))
            .collect(),
        _ => {
            if k > 1 {
                eprintln!("warning: --source-ips only applies to a server on 127.0.0.0/8; not binding");
            }
            Vec::new()
        }
    }
}

pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim()).map_err(|e| format!("{e} (write durations like 20s or 500ms)"))
}

/// A rate in events per second: positive and finite.
pub fn parse_rate(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err("must be a positive number of events per second".into()),
    }
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ------------------------------------------------------------ latency --

/// Latencies in microseconds, up to an hour.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

type Shared = Arc<Mutex<Histogram<u64>>>;

static REGISTRY: Mutex<Vec<Shared>> = Mutex::new(Vec::new());

thread_local! {
    static LOCAL: Shared = {
        let hist = Arc::new(Mutex::new(new_histogram()));
        REGISTRY.lock().expect("registry").push(Arc::clone(&hist));
        hist
    };
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; 64 * 1024]);
}

/// Runs `f` with this thread's delivery-latency histogram. The lock is only
/// ever contended by `merged_latencies` at the end of a run.
pub fn with_latencies<R>(f: impl FnOnce(&mut Histogram<u64>) -> R) -> R {
    LOCAL.with(|h| f(&mut h.lock().expect("latency histogram")))
}

/// Runs `f` with this thread's read buffer.
pub fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// Every thread's delivery latencies, added up.
pub fn merged_latencies() -> Histogram<u64> {
    let mut total = new_histogram();
    for hist in REGISTRY.lock().expect("registry").iter() {
        total
            .add(&*hist.lock().expect("latency histogram"))
            .expect("same bounds");
    }
    total
}

pub fn latency_json(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |us: u64| us as f64 / 1000.0;
    serde_json::json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p90_ms": ms(h.value_at_quantile(0.9)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "p999_ms": ms(h.value_at_quantile(0.999)),
        "max_ms": ms(h.max()),
        "mean_ms": h.mean() / 1000.0,
    })
}

pub fn latency_text(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "no samples".into();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    format!(
        "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3}, n={})",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.mean() / 1000.0,
        h.len()
    )
}

// -------------------------------------------------------------- bits --

/// A set of small sequence numbers.
#[derive(Debug, Default, Clone)]
pub struct Bits {
    words: Vec<u64>,
}

impl Bits {
    pub fn with_capacity(n: u64) -> Self {
        Bits {
            words: Vec::with_capacity(n.div_ceil(64) as usize),
        }
    }

    pub fn from_words(words: Vec<u64>) -> Self {
        Bits { words }
    }

    /// Adds `i`; false when it was already there.
    pub fn insert(&mut self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let fresh = self.words[w] & (1 << b) == 0;
        self.words[w] |= 1 << b;
        fresh
    }

    pub fn len(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// How many of `self` are not in `other`.
    pub fn count_not_in(&self, other: &Bits) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }
}

// --------------------------------------------------------------- RSS --

/// Summed VmRSS of the processes, in KiB; None without pids or when one
/// cannot be read.
pub fn rss_kib(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    let mut total = 0;
    for pid in pids {
        match vm_rss(&format!("/proc/{pid}/status")) {
            Some(kib) => total += kib,
            None => {
                eprintln!("warning: cannot read VmRSS of pid {pid}");
                return None;
            }
        }
    }
    Some(total)
}

pub fn self_rss_kib() -> Option<u64> {
    vm_rss("/proc/self/status")
}

fn vm_rss(path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

// ------------------------------------------------------- machine CPU --

/// The whole machine's CPU counters (every process, the kernel included),
/// from the first line of `/proc/stat`, in clock ticks summed over cores.
#[derive(Debug, Clone, Copy)]
pub struct MachineCpu {
    busy: u64,
    idle: u64,
    cores: u64,
}

impl MachineCpu {
    /// None where `/proc/stat` cannot be read (not Linux).
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let mut lines = stat.lines();
        let fields: Vec<u64> = lines
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let at = |i: usize| fields.get(i).copied().unwrap_or(0);
        let cores = lines.filter(|l| l.starts_with("cpu")).count() as u64;
        Some(MachineCpu {
            busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7),
            idle: at(3) + at(4),
            cores: cores.max(1),
        })
    }

    /// Busy CPU time since `earlier`, in core-seconds over `wall`, and the
    /// busy share of the machine. The share of ticks times cores times the
    /// wall time needs no clock-tick constant.
    pub fn busy_since(&self, earlier: &MachineCpu, wall: Duration) -> (f64, f64) {
        let busy = self.busy.saturating_sub(earlier.busy) as f64;
        let idle = self.idle.saturating_sub(earlier.idle) as f64;
        let share = if busy + idle > 0.0 {
            busy / (busy + idle)
        } else {
            0.0
        };
        (share * self.cores as f64 * wall.as_secs_f64(), share)
    }
}

// ---------------------------------------------------------- rlimit --

/// Raises the open-files soft limit to at least `want` if the hard limit
/// (or privileges) allow; returns the limit in force.
#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
pub fn raise_nofile(want: u64) -> Option<u64> {
    #[repr(C)]
    struct RLimit {
        cur: u64,
        max: u64,
    }
    extern "C" {
        fn getrlimit(resource: i32, rlim: *mut RLimit) -> i32;
        fn setrlimit(resource: i32, rlim: *const RLimit) -> i32;
    }
    const RLIMIT_NOFILE: i32 = 7;
    let mut limit = RLimit { cur: 0, max: 0 };
    // SAFETY: getrlimit/setrlimit read or write one `struct rlimit`, which
    // on 64-bit Linux is two unsigned longs, as `RLimit` is laid out.
    unsafe {
        if getrlimit(RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.cur >= want {
            return Some(limit.cur);
        }
        if want > limit.max {
            // Only privileged processes may raise the hard limit.
            let raised = RLimit { cur: want, max: want };
            if setrlimit(RLIMIT_NOFILE, &raised) == 0 {
                return Some(want);
            }
        }
        let raised = RLimit {
            cur: want.min(limit.max),
            max: limit.max,
        };
        if setrlimit(RLIMIT_NOFILE, &raised) == 0 {
            Some(raised.cur)
        } else {
            Some(limit.cur)
        }
    }
}

#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
pub fn raise_nofile(_want: u64) -> Option<u64> {
    None
}

/// Raises the limit for `sockets` connections and warns when that is not
/// enough.
pub fn ensure_nofile(sockets: usize) {
    let want = sockets as u64 + 512;
    match raise_nofile(want) {
        Some(have) if have < want => eprintln!(
            "warning: open-files limit is {have}, {sockets} connections need about {want}; run with `ulimit -n {want}`"
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_tokens() {
        assert_eq!(
            redact("http://h/e?topic=a&access_token=xyz&b=1"),
            "http://h/e?topic=a&access_token=…&b=1"
        );
        assert_eq!(redact("http://h/e?access_token=xyz"), "http://h/e?access_token=…");
    }

    #[test]
    fn host_ports() {
        assert_eq!(split_host_port("127.0.0.1:8080"), Some(("127.0.0.1", 8080)));
        assert_eq!(split_host_port("localhost"), Some(("localhost", 80)));
        assert_eq!(split_host_port("[::1]:9"), Some(("::1", 9)));
        assert_eq!(split_host_port(":9"), None);
    }

    #[test]
    fn bit_sets() {
        let mut a = Bits::default();
        assert!(a.insert(3));
        assert!(!a.insert(3));
        a.insert(130);
        let mut b = Bits::default();
        b.insert(3);
        assert_eq!(a.len(), 2);
        assert_eq!(a.count_not_in(&b), 1);
        assert!(!a.insert(130) && a.insert(129));
    }
}
