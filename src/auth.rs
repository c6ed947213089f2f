//! Tokens: HS256 JWTs signed with the server's secret, so any backend that
//! knows the secret can mint them and every node can check them; and,
//! beside them, tokens an identity provider signs with its private key
//! (RS256, ES256, EdDSA), checked with public keys loaded at start or
//! fetched from the provider's JWKS URL ([`keys`]: which key checks which
//! token; [`remote`]: fetching and rotation).
//!
//! Both kinds carry the same claims and are revoked alike. The live
//! polling tokens pollcast issues itself are always HS256: the `role` and
//! `sid` claims count only in a token signed with the secret, so an
//! identity provider's own `role` or `sid` claim (Supabase, Keycloak) is
//! ignored rather than read as a polling role.
//!
//! A token says who is calling (`sub`), from when (`nbf`) until when
//! (`exp`), and which topic selectors it may `publish` to and `subscribe`
//! to. Its `jti` and `iat` let an admin revoke it (see [`crate::revocation`]);
//! a revoked token is refused like an expired one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::domain::polling::ids::{ParticipantId, PresenterId, SessionId};
use crate::domain::topic::{is_tenant_name, Selector, Topic};
use crate::revocation::RevocationList;
pub use crate::revocation::TokenFacts;

mod der;
mod jwks;
pub mod keys;
mod material;
pub mod remote;
mod ring;

use keys::{Pick, PublicKey};
use ring::KeyRing;

/// The claims pollcast reads. Unknown claims are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub exp: u64,
    /// Not valid before this time (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// When the token was issued: a revocation by `sub` covers the tokens
    /// issued before it (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The token's own id, for revoking just this token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
    /// `presenter` or `participant` for the live polling tokens pollcast
    /// issues itself; absent on generic tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The session a polling token belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The tenant whose topics every selector of the token names: its
    /// topics are invisible to other tenants and to tokens without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// The claims of an identity provider's token: [`Claims`] without the
/// polling ones, so that the provider's own `role` or `sid`, of whatever
/// type, is ignored: polling roles come only from tokens pollcast signed.
#[derive(Deserialize)]
struct ProviderClaims {
    sub: Option<String>,
    exp: u64,
    nbf: Option<u64>,
    iat: Option<u64>,
    jti: Option<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    tenant: Option<String>,
}

impl From<ProviderClaims> for Claims {
    fn from(c: ProviderClaims) -> Claims {
        Claims {
            sub: c.sub,
            exp: c.exp,
            nbf: c.nbf,
            iat: c.iat,
            jti: c.jti,
            publish: c.publish,
            subscribe: c.subscribe,
            tenant: c.tenant,
            role: None,
            sid: None,
        }
    }
}

/// What a live polling token makes its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Presenter {
        session: SessionId,
        presenter: PresenterId,
    },
    Participant {
        session: SessionId,
        participant: ParticipantId,
    },
}

impl Role {
    pub fn session(&self) -> SessionId {
        match self {
            Role::Presenter { session, .. } | Role::Participant { session, .. } => *session,
        }
    }
}

/// Who is calling, after the token checked out.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: Option<String>,
    pub publish: Vec<Selector>,
    pub subscribe: Vec<Selector>,
    /// A stable name for the caller, for scoping idempotency keys: the
    /// subject, or a hash of the token when it has none (with its tenant).
    pub identity: String,
    pub role: Option<Role>,
    /// The tenant the token acts in; its `publish` and `subscribe`
    /// selectors are already inside the tenant's namespace.
    pub tenant: Option<String>,
    /// What revocations and stream lifetimes look at.
    pub token: TokenFacts,
}

impl Caller {
    /// A topic the client named, inside the caller's tenant if it has one.
    pub fn scope_topic(&self, topic: Topic) -> Topic {
        match &self.tenant {
            Some(tenant) => topic.in_tenant(tenant),
            None => topic,
        }
    }

    /// A selector the client wrote, inside the caller's tenant if it has one.
    pub fn scope_selector(&self, selector: Selector) -> Selector {
        match &self.tenant {
            Some(tenant) => selector.in_tenant(tenant),
            None => selector,
        }
    }

    pub fn may_publish(&self, topic: &Topic) -> bool {
        self.publish.iter().any(|s| s.matches(topic.as_str()))
    }

    /// Whether a requested selector can ever match a topic this caller may read.
    pub fn may_subscribe(&self, selector: &Selector) -> bool {
        self.subscribe.iter().any(|s| s.overlaps(selector))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a bearer token is required")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

/// The keys derived from the secret, and the public keys, built once at start.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Identity providers' keys (`--token-public-key`, `--token-jwks`,
    /// `--token-jwks-url`).
    public: KeyRing,
    /// Tokens already verified, with their expiry: clients send the same
    /// token on every request, and checking its HMAC (plus hashing it into
    /// an identity when it has no `sub`) was ~12 % of the server's
    /// instructions per publish (callgrind, BENCHMARKS.md). The signature of
    /// a given string never changes; its expiry and revocations are checked
    /// again on every use.
    /// Shared, not copied: a caller's lists and names are cloned once, when
    /// its token is first verified.
    verified: Mutex<HashMap<String, (Arc<Caller>, u64)>>,
    /// Bumped, under the cache's lock, whenever the public keys change: a
    /// verification that began before a change does not cache its result,
    /// so a withdrawn key's token cannot slip back into the cache.
    keys_generation: AtomicU64,
    /// Revoked tokens, kept in step with the store by the cluster.
    revocations: Arc<RevocationList>,
}

/// Verified tokens kept at most; past it the cache starts over.
const VERIFIED_CACHE: usize = 10_000;

impl TokenKeys {
    pub fn new(secret: &[u8]) -> Self {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation: keys::validation(Algorithm::HS256),
            public: KeyRing::new(Vec::new()),
            verified: Mutex::new(HashMap::new()),
            keys_generation: AtomicU64::new(0),
            revocations: Arc::new(RevocationList::default()),
        }
    }

    /// The same, also accepting tokens signed by these public keys.
    pub fn with_public_keys(mut self, public: Vec<PublicKey>) -> Self {
        self.public = KeyRing::new(public);
        self
    }

    /// The identity providers' keys this node verifies with, as of now.
    pub fn public_keys(&self) -> Arc<[PublicKey]> {
        self.public.current()
    }

    /// From now on, the keys fetched from `url` are `keys` (the ones it
    /// gave before are dropped). Tokens verified before are checked again:
    /// one signed by a key the provider withdrew stops working at once.
    pub fn replace_fetched_keys(&self, url: &str, keys: Vec<PublicKey>) {
        let mut cache = self.cache();
        self.public.replace(url, keys);
        self.keys_generation.fetch_add(1, Ordering::AcqRel);
        cache.clear();
    }

    /// Changes whenever a token is refused for a `kid` that no key has.
    pub fn unknown_kids(&self) -> tokio::sync::watch::Receiver<u64> {
        self.public.unknown_kids()
    }

    /// The revoked tokens this node refuses.
    pub fn revocations(&self) -> &Arc<RevocationList> {
        &self.revocations
    }

    /// A random 256-bit secret, hex-encoded, for servers started without one.
    pub fn random_secret() -> String {
        let bytes: [u8; 32] = rand::random();
        hex::encode(bytes)
    }

    pub fn mint(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Arc<Caller>, AuthError> {
        let now = unix_now();
        let cached = self.cache().get(token).cloned();
        let caller = match cached {
            Some((caller, exp)) => {
                // The same rule as the JWT check: expired once `exp` has passed.
                if exp < now {
                    self.cache().remove(token);
                    return Err(AuthError::Expired);
                }
                caller
            }
            None => {
                let generation = self.keys_generation.load(Ordering::Acquire);
                let (caller, exp) = self.verify_uncached(token)?;
                let caller = Arc::new(caller);
                let mut cache = self.cache();
                if cache.len() >= VERIFIED_CACHE {
                    cache.clear();
                }
                if self.keys_generation.load(Ordering::Acquire) == generation {
                    cache.insert(token.to_string(), (Arc::clone(&caller), exp));
                }
                caller
            }
        };
        if self.revocations.covers(&caller.token) {
            return Err(AuthError::Revoked);
        }
        Ok(caller)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Arc<Caller>, u64)>> {
        self.verified.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The claims of a token whose signature and dates check out, by the
    /// secret or by the public key its header picks.
    fn decode(&self, token: &str) -> Result<Claims, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| malformed())?;
        let public = self.public.current();
        // A refusal for a kid no key has may be the provider's rotation.
        let refused_kid = |why: AuthError| {
            if let Some(kid) = &header.kid {
                self.public.refused_kid(&public, kid);
            }
            why
        };
        let chosen = keys::pick(&public, header.alg, header.kid.as_deref())
            .map_err(|why| refused_kid(AuthError::Invalid(why.into())))?;
        let indexes = match chosen {
            Pick::Secret => {
                return jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
                    .map(|data| data.claims)
                    .map_err(refusal)
            }
            Pick::Keys(indexes) => indexes,
        };
        for key in indexes.into_iter().map(|i| &public[i]) {
            match jsonwebtoken::decode::<ProviderClaims>(token, key.decoding_key(), key.validation()) {
                Ok(data) => return Ok(data.claims.into()),
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => continue,
                Err(e) => return Err(refusal(e)),
            }
        }
        Err(refused_kid(refusal(ErrorKind::InvalidSignature.into())))
    }

    fn verify_uncached(&self, token: &str) -> Result<(Caller, u64), AuthError> {
        let claims = self.decode(token)?;
        // These end up in logs, rate-limit keys, idempotency scopes and
        // event payloads: nothing a database or a log line cannot hold.
        let printable =
            |value: &Option<String>| value.as_deref().is_none_or(|v| !v.chars().any(char::is_control));
        if !printable(&claims.sub) || !printable(&claims.jti) {
            return Err(AuthError::Invalid(
                "sub and jti must not contain control characters".into(),
            ));
        }
        let parse_plain = |list: &[String]| -> Result<Vec<Selector>, AuthError> {
            list.iter()
                .map(|s| Selector::parse(s).map_err(|e| AuthError::Invalid(format!("selector {s:?}: {e}"))))
                .collect()
        };
        let tenant = match claims.tenant.clone() {
            Some(t) if !is_tenant_name(&t) => {
                return Err(AuthError::Invalid("tenant must be 1 to 64 of [a-z0-9_.-]".into()))
            }
            Some(_) if claims.role.is_some() => {
                return Err(AuthError::Invalid("polling tokens have no tenant".into()))
            }
            other => other,
        };
        let scope = |selector: Selector| match &tenant {
            Some(t) => selector.in_tenant(t),
            None => selector,
        };
        let parse_all = |list: &[String]| -> Result<Vec<Selector>, AuthError> {
            parse_plain(list).map(|selectors| selectors.into_iter().map(scope).collect())
        };
        let identity = match &claims.sub {
            Some(sub) => format!("sub:{sub}"),
            None => {
                use sha2::Digest;
                format!(
                    "token:{}",
                    hex::encode(&sha2::Sha256::digest(token.as_bytes())[..16])
                )
            }
        };
        // The same sub in two tenants is two callers.
        let identity = match &tenant {
            Some(t) => format!("tenant:{t}/{identity}"),
            None => identity,
        };
        let role = parse_role(&claims)?;
        let exp = claims.exp;
        let token = TokenFacts {
            jti: claims.jti.clone(),
            subject: claims.sub.clone(),
            tenant: tenant.clone(),
            issued_at: claims.iat,
            expires_at: exp,
        };
        Ok((
            Caller {
                role,
                publish: parse_all(&claims.publish)?,
                subscribe: parse_all(&claims.subscribe)?,
                subject: claims.sub,
                identity,
                tenant,
                token,
            },
            exp,
        ))
    }
}

/// A token jsonwebtoken refused, as the client is told.
fn refusal(error: jsonwebtoken::errors::Error) -> AuthError {
    match error.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
        _ => malformed(),
    }
}

fn malformed() -> AuthError {
    AuthError::Invalid("malformed token".into())
}

fn parse_role(claims: &Claims) -> Result<Option<Role>, AuthError> {
    let Some(role) = claims.role.as_deref() else {
        return Ok(None);
    };
    let bad = || AuthError::Invalid("malformed polling claims".into());
    let session = SessionId::parse(claims.sid.as_deref().ok_or_else(bad)?).map_err(|_| bad())?;
    let subject = claims.sub.as_deref().ok_or_else(bad)?;
    match role {
        "presenter" => Ok(Some(Role::Presenter {
            session,
            presenter: PresenterId::parse(subject).map_err(|_| bad())?,
        })),
        "participant" => Ok(Some(Role::Participant {
            session,
            participant: ParticipantId::parse(subject).map_err(|_| bad())?,
        })),
        _ => Err(bad()),
    }
}

/// How long the tokens issued with a session or a join stay valid.
pub const POLLING_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

impl TokenKeys {
    /// The presenter token returned when a session is created: controls the
    /// session and reads its topic. Like a participant token, it carries no
    /// `jti` and no `iat`: its `sub` is unique to it, so a revocation by
    /// `sub` names it alone (issued before any revocation, for want of an
    /// `iat`), and every byte of a token is hashed on each first use (both
    /// claims cost 12.6 M more instructions per 1,000 joins and votes,
    /// callgrind).
    /// Dated from `issued` (the session's creation), not from the clock,
    /// so the same session always gets the same token: an answer kept for
    /// an Idempotency-Key is the answer first given.
    pub fn presenter_token(
        &self,
        session: SessionId,
        presenter: PresenterId,
        issued: DateTime<Utc>,
    ) -> String {
        self.mint(&presenter_claims(session, presenter, issued))
    }

    /// A co-presenter's token: the presenter's powers, with an `iat` and a
    /// `jti` of its own, so that it can be revoked without the presenter's.
    pub fn co_presenter_token(
        &self,
        session: SessionId,
        presenter: PresenterId,
        issued: DateTime<Utc>,
    ) -> String {
        self.mint(&Claims {
            iat: Some(issued.timestamp().max(0) as u64),
            jti: Some(uuid::Uuid::new_v4().simple().to_string()),
            ..presenter_claims(session, presenter, issued)
        })
    }

    /// The participant token returned on joining: votes as this participant
    /// and reads the session topic and its own unicast topic. Dated from
    /// `issued` (the join), like the presenter's.
    pub fn participant_token(
        &self,
        session: SessionId,
        participant: ParticipantId,
        issued: DateTime<Utc>,
    ) -> String {
        self.mint(&Claims {
            sub: Some(participant.to_string()),
            exp: expiry_after(issued, POLLING_TOKEN_TTL),
            subscribe: vec![format!("session:{session}"), format!("participant:{participant}")],
            role: Some("participant".into()),
            sid: Some(session.to_string()),
            ..Claims::default()
        })
    }
}

/// What a presenter token of `session` claims: control of the session and
/// its topic, for [`POLLING_TOKEN_TTL`] after `issued`.
fn presenter_claims(session: SessionId, presenter: PresenterId, issued: DateTime<Utc>) -> Claims {
    Claims {
        sub: Some(presenter.to_string()),
        exp: expiry_after(issued, POLLING_TOKEN_TTL),
        subscribe: vec![format!("session:{session}")],
        role: Some("presenter".into()),
        sid: Some(session.to_string()),
        ..Claims::default()
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `exp` for a token valid for `ttl` after `issued`.
fn expiry_after(issued: DateTime<Utc>, ttl: Duration) -> u64 {
    (issued.timestamp().max(0) as u64).saturating_add(ttl.as_secs())
}

/// `exp` for a token valid for `ttl` from now.
pub fn expiry_in(ttl: Duration) -> u64 {
    (SystemTime::now() + ttl)
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_token_still_expires_on_time() {
        let keys = TokenKeys::new(b"secret");
        let token = keys.mint(&Claims {
            sub: Some("ann".into()),
            exp: unix_now() + 1,
            subscribe: vec!["demo:*".into()],
            ..Claims::default()
        });
        assert!(keys.verify(&token).is_ok());
        assert!(
            keys.verify(&token).is_ok(),
            "the second check comes from the cache"
        );
        std::thread::sleep(Duration::from_millis(2100));
        assert_eq!(keys.verify(&token).unwrap_err(), AuthError::Expired);
        // A forged token is never cached as valid.
        let forged = format!("{}x", token);
        assert!(matches!(keys.verify(&forged), Err(AuthError::Invalid(_))));
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: Some("alice".into()),
            exp,
            publish: vec!["demo:*".into()],
            subscribe: vec!["demo:*".into()],
            ..Claims::default()
        }
    }

    #[test]
    fn a_minted_token_verifies_with_its_permissions() {
        let keys = TokenKeys::new(b"secret");
        let caller = keys
            .verify(&keys.mint(&claims(expiry_in(Duration::from_secs(60)))))
            .unwrap();
        assert_eq!(caller.subject.as_deref(), Some("alice"));
        assert!(caller.may_publish(&Topic::parse("demo:x").unwrap()));
        assert!(!caller.may_publish(&Topic::parse("other:x").unwrap()));
    }

    #[test]
    fn expired_forged_and_garbage_tokens_are_refused() {
        let keys = TokenKeys::new(b"secret");
        assert_eq!(
            keys.verify(&keys.mint(&claims(1))).unwrap_err(),
            AuthError::Expired
        );
        let forged = TokenKeys::new(b"other").mint(&claims(expiry_in(Duration::from_secs(60))));
        assert!(matches!(keys.verify(&forged), Err(AuthError::Invalid(_))));
        assert!(matches!(keys.verify("garbage"), Err(AuthError::Invalid(_))));
    }
}
