//! How long a connection may take and how many may be open: the limits
//! the server's flags set.

use std::time::Duration;

use crate::net::IpNet;

/// The settings of `Connections` (flags `--head-timeout`,
/// `--idle-timeout`, `--max-connections`, `--max-connections-per-address`,
/// `--trusted-proxy`).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// From a connection's accept, or the first byte of a later request,
    /// to the end of that request's head.
    pub head_timeout: Duration,
    /// How long a kept-alive connection may send nothing.
    pub idle_timeout: Duration,
    /// Open connections on this node, all states together.
    pub max_connections: usize,
    /// Open connections from one peer address (trusted proxies excepted).
    pub max_per_address: usize,
    /// Peers whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: Vec<IpNet>,
}

impl ConnectionLimits {
    /// Generous limits for embedding and tests.
    pub fn unlimited() -> Self {
        ConnectionLimits {
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
            max_connections: usize::MAX,
            max_per_address: usize::MAX,
            trusted_proxies: Vec::new(),
        }
    }
}
