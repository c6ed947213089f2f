//! `pollcast::auth::TokenKeys::verify`: bearer tokens from clients.
//!
//! Each input is an arbitrary string verified as it is, and a set of
//! claims (every field of `pollcast::auth::Claims`) minted into a token,
//! verified, minted with another secret, and tampered with. The input is
//! read with `arbitrary`, or, when it starts with `{`, as JSON of the same
//! shape (`{"raw": "…", "claims": {"sub": "ann", "exp": …}, …}`): the seed
//! corpus is written that way, so that it can be read.
//!
//! Invariants:
//! - never panics;
//! - a minted token whose `exp` is in the future, whose `nbf` (if any) is
//!   not, whose `publish`/`subscribe` selectors are valid, whose `tenant`
//!   (if any) is a tenant name, that has no `role`, and no control
//!   character in `sub`/`jti`, verifies to a `Caller` whose subject is
//!   `sub`, with those selectors (inside the tenant), that tenant, and the
//!   token's `jti`/`iat`/`exp`;
//! - an expired token is refused as expired, a token not valid yet as such;
//! - whatever verifies has printable `sub`/`jti`, valid selectors and tenant,
//!   an `exp` not in the past, and a role only with a polling session;
//! - a token signed with another secret never verifies ("bad signature");
//! - a minted token with any one byte changed never verifies.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use pollcast::auth::{unix_now, AuthError, Claims, TokenKeys};
use pollcast::domain::topic::{is_tenant_name, Selector};
use serde::Deserialize;

/// `pollcast::auth::Claims`, field for field.
#[derive(Debug, Default, Arbitrary, Deserialize)]
#[serde(default)]
struct FuzzClaims {
    sub: Option<String>,
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    jti: Option<String>,
    publish: Vec<String>,
    subscribe: Vec<String>,
    role: Option<String>,
    sid: Option<String>,
    tenant: Option<String>,
}

#[derive(Debug, Arbitrary, Deserialize, Default)]
#[serde(default)]
struct Input {
    /// Verified as it is.
    raw: String,
    claims: FuzzClaims,
    /// Read `exp` and `nbf` as offsets from now (`(v % 2^21) - 2^20`
    /// seconds), so that both sides of "now" come up often.
    relative_times: bool,
    /// One byte of the minted token to change, and what to add to it.
    tamper_at: u16,
    tamper_by: u8,
}

const SECRET: &[u8] = b"pollcast fuzz secret";
const OTHER_SECRET: &[u8] = b"another secret entirely";
/// Tokens within this many seconds of expiring (or of becoming valid) are
/// not judged: the clock moves between minting and verifying.
const SLACK: u64 = 5;

fn keys() -> &'static TokenKeys {
    static KEYS: OnceLock<TokenKeys> = OnceLock::new();
    KEYS.get_or_init(|| TokenKeys::new(SECRET))
}

fn other_keys() -> &'static TokenKeys {
    static KEYS: OnceLock<TokenKeys> = OnceLock::new();
    KEYS.get_or_init(|| TokenKeys::new(OTHER_SECRET))
}

fn relative(now: u64, v: u64) -> u64 {
    let offset = (v % (1 << 21)) as i64 - (1 << 20);
    now.saturating_add_signed(offset)
}

fn printable(value: &Option<String>) -> bool {
    value.as_deref().is_none_or(|v| !v.chars().any(char::is_control))
}

fn scoped(raw: &str, tenant: &Option<String>) -> String {
    match tenant {
        Some(t) => format!("~{t}:{raw}"),
        None => raw.to_owned(),
    }
}

fuzz_target!(|data: &[u8]| {
    let json = (data.first() == Some(&b'{'))
        .then(|| serde_json::from_slice::<Input>(data).ok())
        .flatten();
    let input = match json {
        Some(input) => input,
        None => match Input::arbitrary_take_rest(Unstructured::new(data)) {
            Ok(input) => input,
            Err(_) => return,
        },
    };
    let keys = keys();
    // Anything at all: never a panic. A valid token here would need the
    // fuzzer to forge an HMAC; if it is one, it obeys the same rules.
    if let Ok(caller) = keys.verify(&input.raw) {
        assert!(printable(&caller.subject));
        assert!(caller.token.expires_at >= unix_now());
    }

    let now = unix_now();
    let c = &input.claims;
    let (exp, nbf) = if input.relative_times {
        (relative(now, c.exp), c.nbf.map(|n| relative(now, n)))
    } else {
        (c.exp, c.nbf)
    };
    let claims = Claims {
        sub: c.sub.clone(),
        exp,
        nbf,
        iat: c.iat,
        jti: c.jti.clone(),
        publish: c.publish.clone(),
        subscribe: c.subscribe.clone(),
        role: c.role.clone(),
        sid: c.sid.clone(),
        tenant: c.tenant.clone(),
    };
    let token = keys.mint(&claims);
    let result = keys.verify(&token);

    let expired = exp.saturating_add(SLACK) < now;
    let current = exp > now.saturating_add(SLACK);
    let not_yet = nbf.is_some_and(|n| n > now.saturating_add(SLACK));
    let started = nbf.is_none_or(|n| n.saturating_add(SLACK) < now);
    let selectors_ok = claims
        .publish
        .iter()
        .chain(&claims.subscribe)
        .all(|s| Selector::parse(s).is_ok());
    let tenant_ok = claims.tenant.as_deref().is_none_or(is_tenant_name);
    let plain = printable(&claims.sub) && printable(&claims.jti) && selectors_ok && tenant_ok;

    if expired {
        assert_eq!(
            result.as_ref().err(),
            Some(&AuthError::Expired),
            "an expired token: {claims:?}"
        );
    } else if current && not_yet {
        assert_eq!(
            result.as_ref().err(),
            Some(&AuthError::NotYetValid),
            "a token not valid yet: {claims:?}"
        );
    }
    if current && started && plain && claims.role.is_none() {
        let caller = match &result {
            Ok(caller) => caller,
            Err(e) => panic!("a valid token is refused ({e}): {claims:?}"),
        };
        assert_eq!(caller.subject, claims.sub, "the subject is `sub`");
        assert_eq!(caller.tenant, claims.tenant);
        assert!(caller.role.is_none());
        let names = |list: &[Selector]| list.iter().map(|s| s.as_str().to_owned()).collect::<Vec<_>>();
        let want = |list: &[String]| list.iter().map(|s| scoped(s, &claims.tenant)).collect::<Vec<_>>();
        assert_eq!(names(&caller.publish), want(&claims.publish));
        assert_eq!(names(&caller.subscribe), want(&claims.subscribe));
        for s in caller.publish.iter().chain(&caller.subscribe) {
            assert!(s.display_name() == s.as_str() || claims.tenant.is_some());
        }
        assert_eq!(caller.token.subject, claims.sub);
        assert_eq!(caller.token.jti, claims.jti);
        assert_eq!(caller.token.issued_at, claims.iat);
        assert_eq!(caller.token.expires_at, exp);
        assert_eq!(caller.token.tenant, claims.tenant);
        let base = match &claims.sub {
            Some(sub) => format!("sub:{sub}"),
            None => {
                let hash = caller.identity.rsplit_once("token:").map_or("", |(_, h)| h);
                assert!(
                    hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
                    "identity {:?}",
                    caller.identity
                );
                format!("token:{hash}")
            }
        };
        let identity = match &claims.tenant {
            Some(t) => format!("tenant:{t}/{base}"),
            None => base,
        };
        assert_eq!(caller.identity, identity);
        // The cached path answers the same.
        let again = keys.verify(&token).expect("verified twice");
        assert_eq!(again.identity, caller.identity);
    }
    if let Ok(caller) = &result {
        // Whatever verifies obeys every rule.
        assert!(!expired, "an expired token verified");
        assert!(printable(&caller.subject) && printable(&caller.token.jti));
        assert!(
            selectors_ok && tenant_ok,
            "bad selectors or tenant verified: {claims:?}"
        );
        assert!(!(not_yet && current), "a token not valid yet verified");
        match &claims.role {
            None => assert!(caller.role.is_none()),
            Some(role) => {
                assert!(
                    role == "presenter" || role == "participant",
                    "role {role:?} verified"
                );
                assert!(caller.role.is_some() && caller.tenant.is_none());
            }
        }
    }

    // Signed with another secret: never.
    let forged = other_keys().mint(&claims);
    assert_eq!(
        keys.verify(&forged).err(),
        Some(AuthError::Invalid("bad signature".into())),
        "a token signed with another secret"
    );

    // One byte changed: never (as long as the result is still a string).
    let mut bytes = token.clone().into_bytes();
    let at = usize::from(input.tamper_at) % bytes.len();
    bytes[at] = bytes[at].wrapping_add(input.tamper_by.max(1));
    if let Ok(tampered) = String::from_utf8(bytes) {
        assert!(
            keys.verify(&tampered).is_err(),
            "a tampered token verified: {tampered:?} from {token:?}"
        );
    }
});
