//! Every open stream of this node, by connection id, with what is known of
//! the token it was opened with: what is needed to end a stream from the
//! outside (an admin's request, a revoked token) with a `connection:closing`
//! frame saying why.
//!
//! A stream registers when it opens and leaves when it is dropped. Ending
//! one sets its [`Closing`] once; the stream notices at its next step (it
//! waits on the notification while live) and sends its last frame.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;
use uuid::Uuid;

use crate::auth::TokenFacts;

/// Why the server ends a stream. Sent in `connection:closing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The token's `exp` has passed: reconnect with a fresh token.
    TokenExpired,
    /// The token was revoked: reconnecting with it is refused.
    TokenRevoked,
    /// An admin ended this connection.
    ClosedByAdmin,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::TokenExpired => "token_expired",
            CloseReason::TokenRevoked => "token_revoked",
            CloseReason::ClosedByAdmin => "closed_by_admin",
        }
    }

    /// Whether the client should open the stream again (with a new token
    /// where the old one expired): the `reconnect` of the closing frame.
    pub fn reconnect(self) -> bool {
        matches!(self, CloseReason::TokenExpired)
    }
}

/// Set once when something outside a stream ends it.
#[derive(Debug, Default)]
pub struct Closing {
    reason: OnceLock<CloseReason>,
    notify: Notify,
}

impl Closing {
    /// Asks the stream to end (the first reason wins).
    pub fn close(&self, reason: CloseReason) {
        if self.reason.set(reason).is_ok() {
            // A stored permit: the stream sees it even if it is not
            // waiting right now.
            self.notify.notify_one();
        }
    }

    pub fn reason(&self) -> Option<CloseReason> {
        self.reason.get().copied()
    }

    /// Resolves once the stream has been asked to end.
    pub async fn requested(&self) {
        if self.reason().is_none() {
            self.notify.notified().await;
        }
    }
}

/// This node's open streams.
#[derive(Default)]
pub struct OpenStreams {
    streams: Mutex<HashMap<Uuid, Entry>>,
}

struct Entry {
    /// `None` for streams opened without a token (anonymous session
    /// watchers): revocations cannot concern them.
    token: Option<TokenFacts>,
    closing: Arc<Closing>,
}

/// A stream's place in [`OpenStreams`]; leaves it when dropped.
pub struct Registration {
    id: Uuid,
    streams: Arc<OpenStreams>,
    pub closing: Arc<Closing>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.streams.lock().remove(&self.id);
    }
}

impl OpenStreams {
    pub fn new() -> Arc<Self> {
        Arc::new(OpenStreams::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(self: &Arc<Self>, id: Uuid, token: Option<TokenFacts>) -> Registration {
        let closing = Arc::new(Closing::default());
        self.lock().insert(
            id,
            Entry {
                token,
                closing: Arc::clone(&closing),
            },
        );
        Registration {
            id,
            streams: Arc::clone(self),
            closing,
        }
    }

    /// Ends the stream `id` if this node holds it.
    pub fn close(&self, id: Uuid, reason: CloseReason) -> bool {
        match self.lock().get(&id) {
            Some(entry) => {
                entry.closing.close(reason);
                true
            }
            None => false,
        }
    }

    /// Ends every stream whose token `covered` says so; returns how many.
    pub fn close_matching(&self, covered: impl Fn(&TokenFacts) -> bool, reason: CloseReason) -> usize {
        let streams = self.lock();
        let mut closed = 0;
        for entry in streams.values() {
            if entry.token.as_ref().is_some_and(&covered) {
                entry.closing.close(reason);
                closed += 1;
            }
        }
        closed
    }

    pub fn holds(&self, id: Uuid) -> bool {
        self.lock().contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(sub: &str) -> TokenFacts {
        TokenFacts {
            subject: Some(sub.into()),
            ..TokenFacts::default()
        }
    }

    #[tokio::test]
    async fn a_stream_learns_why_it_was_closed_even_if_not_waiting() {
        let streams = OpenStreams::new();
        let id = Uuid::new_v4();
        let registration = streams.register(id, Some(facts("ann")));
        assert!(streams.close(id, CloseReason::ClosedByAdmin));
        // Closed before anybody waited: the wait still ends at once.
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            registration.closing.requested(),
        )
        .await
        .expect("the request is kept");
        assert_eq!(registration.closing.reason(), Some(CloseReason::ClosedByAdmin));
        streams.close(id, CloseReason::TokenRevoked);
        assert_eq!(
            registration.closing.reason(),
            Some(CloseReason::ClosedByAdmin),
            "the first reason wins"
        );
        drop(registration);
        assert!(!streams.holds(id));
        assert!(!streams.close(id, CloseReason::ClosedByAdmin));
    }

    #[test]
    fn only_the_streams_of_matching_tokens_are_closed() {
        let streams = OpenStreams::new();
        let ann = streams.register(Uuid::new_v4(), Some(facts("ann")));
        let bob = streams.register(Uuid::new_v4(), Some(facts("bob")));
        let anonymous = streams.register(Uuid::new_v4(), None);
        let closed =
            streams.close_matching(|t| t.subject.as_deref() == Some("ann"), CloseReason::TokenRevoked);
        assert_eq!(closed, 1);
        assert_eq!(ann.closing.reason(), Some(CloseReason::TokenRevoked));
        assert_eq!(bob.closing.reason(), None);
        assert_eq!(anonymous.closing.reason(), None);
    }
}
