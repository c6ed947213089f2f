//! Revoked tokens: an admin names a token by its `jti`, or every token of a
//! subject issued up to now by its `sub`, and until a time (after which the
//! tokens would have expired anyway, so the record can go).
//!
//! Revocations are kept in the store (so they outlive a restart and every
//! node shares them) and, on each node, in a [`RevocationList`] that token
//! checks read. A node that records one applies it at once and tells the
//! others over the cluster bus; each node also reloads the list every few
//! seconds, which covers a bus message lost while its listener reconnected.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// What a revocation can name of a token, and when it stops being valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFacts {
    pub jti: Option<String>,
    pub subject: Option<String>,
    pub tenant: Option<String>,
    /// `iat`, seconds since the epoch.
    pub issued_at: Option<u64>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    pub id: Uuid,
    /// Only the token with this `jti`…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// …or every token of this `sub` issued (by its `iat`) no later than
    /// `revoked_at`; a token without `iat` counts as issued before.
    #[serde(default, rename = "sub", skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Only tokens of this tenant (otherwise, of any tenant or none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(with = "crate::domain::event::timestamp_format")]
    pub revoked_at: DateTime<Utc>,
    /// In force until then.
    #[serde(with = "crate::domain::event::timestamp_format")]
    pub until: DateTime<Utc>,
}

impl Revocation {
    /// Whether this revocation refuses `token` at `now`. With both `jti`
    /// and `sub` given, the token must match both.
    pub fn covers(&self, token: &TokenFacts, now: DateTime<Utc>) -> bool {
        if self.until <= now {
            return false;
        }
        if self.tenant.is_some() && self.tenant != token.tenant {
            return false;
        }
        if let Some(jti) = &self.jti {
            if token.jti.as_ref() != Some(jti) {
                return false;
            }
        }
        if let Some(subject) = &self.subject {
            if token.subject.as_ref() != Some(subject) {
                return false;
            }
            // Same second counts as before: a revocation never misses a
            // token minted just ahead of it (one minted just after it waits
            // a second).
            let revoked_at = self.revoked_at.timestamp().max(0) as u64;
            if token.issued_at.is_some_and(|iat| iat > revoked_at) {
                return false;
            }
        }
        self.jti.is_some() || self.subject.is_some()
    }
}

/// The revocations in force on this node, read on every token check.
#[derive(Debug, Default)]
pub struct RevocationList {
    active: RwLock<Arc<Vec<Revocation>>>,
    /// Whether `active` holds any: the usual answer, no, without the lock.
    any: AtomicBool,
}

impl RevocationList {
    fn current(&self) -> Arc<Vec<Revocation>> {
        Arc::clone(&self.active.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Whether any revocation in force refuses `token` now.
    pub fn covers(&self, token: &TokenFacts) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let active = self.current();
        if active.is_empty() {
            return false;
        }
        let now = Utc::now();
        active.iter().any(|r| r.covers(token, now))
    }

    /// Replaces the list with what the store holds.
    pub fn replace(&self, revocations: Vec<Revocation>) {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        self.any.store(!revocations.is_empty(), Ordering::Release);
        *active = Arc::new(revocations);
    }

    /// Adds one, ahead of the next reload.
    pub fn add(&self, revocation: Revocation) {
        let mut active = self.active.write().unwrap_or_else(|e| e.into_inner());
        let mut next: Vec<Revocation> = active.iter().filter(|r| r.id != revocation.id).cloned().collect();
        next.push(revocation);
        self.any.store(true, Ordering::Release);
        *active = Arc::new(next);
    }

    /// The revocations in force now.
    pub fn in_force(&self) -> Vec<Revocation> {
        let now = Utc::now();
        self.current().iter().filter(|r| r.until > now).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(jti: &str, sub: &str, iat: u64) -> TokenFacts {
        TokenFacts {
            jti: Some(jti.into()),
            subject: Some(sub.into()),
            tenant: None,
            issued_at: Some(iat),
            expires_at: u64::MAX,
        }
    }

    fn revocation(jti: Option<&str>, sub: Option<&str>, at: i64) -> Revocation {
        Revocation {
            id: Uuid::new_v4(),
            jti: jti.map(str::to_string),
            subject: sub.map(str::to_string),
            tenant: None,
            revoked_at: DateTime::from_timestamp(at, 0).unwrap(),
            until: DateTime::from_timestamp(at + 3600, 0).unwrap(),
        }
    }

    #[test]
    fn a_jti_revokes_that_token_only() {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let by_jti = revocation(Some("t1"), None, 1_000);
        assert!(by_jti.covers(&token("t1", "ann", 10), now));
        assert!(!by_jti.covers(&token("t2", "ann", 10), now));
    }

    #[test]
    fn a_sub_revokes_the_tokens_issued_up_to_then() {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let by_sub = revocation(None, Some("ann"), 1_000);
        assert!(by_sub.covers(&token("t1", "ann", 999), now));
        assert!(
            by_sub.covers(&token("t1", "ann", 1_000), now),
            "the same second counts"
        );
        assert!(
            !by_sub.covers(&token("t1", "ann", 1_001), now),
            "a token issued later is fine"
        );
        assert!(!by_sub.covers(&token("t1", "bob", 10), now));
        let no_iat = TokenFacts {
            issued_at: None,
            ..token("t1", "ann", 0)
        };
        assert!(by_sub.covers(&no_iat, now), "no iat: issued before");
    }

    #[test]
    fn a_revocation_ends_at_its_until() {
        let by_jti = revocation(Some("t1"), None, 1_000);
        let later = DateTime::from_timestamp(1_000 + 3600, 0).unwrap();
        assert!(!by_jti.covers(&token("t1", "ann", 10), later));
    }

    #[test]
    fn a_tenant_narrows_a_revocation() {
        let now = DateTime::from_timestamp(1_000, 0).unwrap();
        let mut by_sub = revocation(None, Some("ann"), 1_000);
        by_sub.tenant = Some("acme".into());
        assert!(!by_sub.covers(&token("t1", "ann", 10), now));
        let in_acme = TokenFacts {
            tenant: Some("acme".into()),
            ..token("t1", "ann", 10)
        };
        assert!(by_sub.covers(&in_acme, now));
    }

    #[test]
    fn the_list_refuses_what_any_revocation_covers() {
        let list = RevocationList::default();
        let ann = TokenFacts {
            issued_at: Some(1),
            ..token("t1", "ann", 1)
        };
        assert!(!list.covers(&ann));
        let mut by_sub = revocation(None, Some("ann"), Utc::now().timestamp());
        by_sub.until = Utc::now() + chrono::Duration::hours(1);
        list.add(by_sub);
        assert!(list.covers(&ann));
        list.replace(Vec::new());
        assert!(!list.covers(&ann));
    }
}
