//! `pollcast::http::connections::client_address` (who a request comes
//! from, behind trusted proxies) and `IpNet::parse` (`--trusted-proxy`).
//!
//! The input is text, one item per line:
//!   line 1: the peer's address (`127.0.0.1` when it is not one);
//!   line 2: trusted networks, separated by spaces, each through
//!           `IpNet::parse` (those it refuses are left out);
//!   further lines: raw `X-Forwarded-For` header values (one header each;
//!           those `HeaderValue` refuses are left out).
//!
//! Invariants:
//! - never panics;
//! - `IpNet::parse` accepts an address, optionally `/prefix` with a prefix
//!   within the address family, and a network contains its own address;
//! - the result is the peer itself or one of the addresses listed in the
//!   header (IPv4-mapped IPv6 addresses counting as IPv4);
//! - when the peer is not trusted, the result is the peer;
//! - when it is, the result is the nearest address of the header (from the
//!   right) that is not trusted, or the peer when there is none or when a
//!   hop is not an address.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pollcast::http::connections::{client_address, IpNet};

/// Networks written as IPv4-mapped IPv6 (`::ffff:10.0.0.1`) once
/// contained nothing at all, not even their own address. Fixed: always
/// checked.
fn mapped_base_is_known_issue() -> bool {
    false
}

fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(address, IpAddr::V4),
        v4 => v4,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let peer_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let nets_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();

    check_net(&peer_line, &IpNet::parse(&peer_line));
    let peer: IpAddr = peer_line
        .trim()
        .parse()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut trusted = Vec::new();
    for raw in nets_line.split(' ') {
        let parsed = IpNet::parse(raw);
        check_net(raw, &parsed);
        trusted.extend(parsed);
    }

    let mut headers = HeaderMap::new();
    for value in lines.take(8) {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append("x-forwarded-for", value);
        }
    }

    let result = client_address(peer, &headers, &trusted);
    let peer = canonical(peer);
    let is_trusted = |a: IpAddr| trusted.iter().any(|net| net.contains(a));

    let hops: Vec<Option<IpAddr>> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|hop| hop.trim().parse::<IpAddr>().ok().map(canonical))
        .collect();
    let listed: Vec<IpAddr> = hops.iter().flatten().copied().collect();

    assert!(
        result == peer || listed.contains(&result),
        "{result} is neither the peer {peer} nor listed in {headers:?}"
    );
    if !is_trusted(peer) {
        assert_eq!(result, peer, "an untrusted peer is the client");
        return;
    }
    let expected = if hops.iter().any(Option::is_none) {
        peer
    } else {
        listed
            .iter()
            .rev()
            .copied()
            .find(|a| !is_trusted(*a))
            .unwrap_or(peer)
    };
    assert_eq!(
        result, expected,
        "peer {peer}, trusted {trusted:?}, header {headers:?}"
    );
    if result != peer {
        assert!(!is_trusted(result), "a trusted proxy taken for the client");
    }
});

fn check_net(raw: &str, parsed: &Result<IpNet, String>) {
    let (address, prefix) = match raw.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (raw, None),
    };
    let base = address.trim().parse::<IpAddr>().ok();
    let max = if base.is_some_and(|b| b.is_ipv4()) {
        32
    } else {
        128
    };
    let prefix_ok = prefix.is_none_or(|p| p.trim().parse::<u8>().is_ok_and(|p| p <= max));
    assert_eq!(
        parsed.is_ok(),
        base.is_some() && prefix_ok,
        "IpNet::parse({raw:?}) = {parsed:?}"
    );
    if let Err(message) = parsed {
        // It quotes the input once (as `{:?}`), and no more.
        assert!(
            message.len() <= format!("{raw:?}").len() + 100,
            "a long error message: {message}"
        );
    }
    if let (Ok(net), Some(base)) = (parsed, base) {
        let mapped = matches!(base, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some());
        if !(mapped && mapped_base_is_known_issue()) {
            assert!(
                net.contains(base),
                "{raw:?} does not contain its own address {base}"
            );
        }
        // Prefix 0 covers the whole family.
        if prefix.is_some_and(|p| p.trim().parse::<u8>() == Ok(0)) && !mapped {
            let other = match base {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
                IpAddr::V6(_) => "2001:db8::7".parse().unwrap(),
            };
            assert!(net.contains(other), "{raw:?} does not contain {other}");
        }
    }
}
