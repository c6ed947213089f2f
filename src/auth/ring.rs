//! The identity providers' keys a node verifies with, as they are now:
//! the ones loaded from files at start, which never change, beside the
//! ones fetched from each JWKS URL, which a fetch replaces whole
//! (`remote.rs`).
//!
//! Verifying takes the current list as one `Arc` (a read lock for the
//! clone, none while checking signatures); a replacement builds a new
//! list. Tokens are verified far more often than keys rotate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use super::keys::PublicKey;

pub struct KeyRing {
    /// `--token-public-key` and `--token-jwks` files' keys.
    fixed: Vec<PublicKey>,
    /// The last good key set of each JWKS URL.
    fetched: Mutex<BTreeMap<String, Vec<PublicKey>>>,
    /// `fixed`, then every URL's keys: what tokens are checked against.
    current: RwLock<Arc<[PublicKey]>>,
    /// Counts tokens refused for a `kid` that no key has: the provider may
    /// have rotated, so the fetchers look at once (rate-limited there). A
    /// counter in a watch rather than a notification: a fetcher busy
    /// fetching or waiting out its gap still sees it afterwards.
    unknown_kids: watch::Sender<u64>,
}

impl KeyRing {
    pub fn new(fixed: Vec<PublicKey>) -> Self {
        KeyRing {
            current: RwLock::new(fixed.clone().into()),
            fixed,
            fetched: Mutex::default(),
            unknown_kids: watch::Sender::new(0),
        }
    }

    /// Every key, as of now.
    pub fn current(&self) -> Arc<[PublicKey]> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the keys that came from `url` with `keys`.
    pub fn replace(&self, url: &str, keys: Vec<PublicKey>) {
        let mut fetched = self.fetched.lock().unwrap_or_else(|e| e.into_inner());
        fetched.insert(url.to_owned(), keys);
        let all: Vec<PublicKey> = self
            .fixed
            .iter()
            .chain(fetched.values().flatten())
            .cloned()
            .collect();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = all.into();
    }

    /// A token naming `kid` was refused: if no key has that `kid`, tell
    /// the fetchers.
    pub fn refused_kid(&self, keys: &[PublicKey], kid: &str) {
        if !keys.iter().any(|key| key.kid.as_deref() == Some(kid)) {
            self.unknown_kids
                .send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    /// Changes whenever a token is refused for an unknown `kid`.
    pub fn unknown_kids(&self) -> watch::Receiver<u64> {
        self.unknown_kids.subscribe()
    }
}
