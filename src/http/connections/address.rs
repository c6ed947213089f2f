//! Who a connection or request comes from: the peer's address, or behind
//! a trusted proxy the address it forwarded.

use std::net::IpAddr;

use http::HeaderMap;

use crate::net::{canonical, IpNet};

/// The address a request comes from: the peer's, or, when the peer is a
/// trusted proxy, the nearest address in `X-Forwarded-For` that is not one
/// (a client can prepend anything to that header; only what trusted proxies
/// appended is believed).
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|net| net.contains(address));
    let peer = canonical(peer);
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .map(|hop| hop.parse::<IpAddr>().ok())
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default();
    forwarded
        .into_iter()
        .rev()
        .map(canonical)
        .find(|address| !is_trusted(*address))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(raw: &str) -> IpNet {
        IpNet::parse(raw).unwrap()
    }

    #[test]
    fn cidr_blocks_contain_their_addresses() {
        assert!(net("10.0.0.0/8").contains("10.1.2.3".parse().unwrap()));
        assert!(!net("10.0.0.0/8").contains("11.1.2.3".parse().unwrap()));
        assert!(net("127.0.0.1").contains("127.0.0.1".parse().unwrap()));
        assert!(net("127.0.0.1").contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(net("fd00::/8").contains("fd12::1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(net("::ffff:10.0.0.5").contains("::ffff:10.0.0.5".parse().unwrap()));
        assert!(net("::ffff:10.0.0.0/120").contains("10.0.0.9".parse().unwrap()));
        assert!(net("::/8").contains("::ffff:0.0.0.0".parse().unwrap()));
        assert!(!net("fd00::/8").contains("10.0.0.9".parse().unwrap()));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("proxy").is_err());
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_forwarded_address() {
        let trusted = [net("10.0.0.0/8")];
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        // A client's own claim in front is ignored; the proxy's view counts.
        let headers = forwarded("6.6.6.6, 203.0.113.9, 10.0.0.7");
        assert_eq!(
            client_address(proxy, &headers, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // An untrusted peer's header is not believed at all.
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_address(stranger, &headers, &trusted), stranger);
        // Garbage in the header: the proxy itself is the client.
        assert_eq!(
            client_address(proxy, &forwarded("not an address"), &trusted),
            proxy
        );
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy);
    }
}
