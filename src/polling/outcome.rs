//! What live polling commands and queries come back with: typed outcomes
//! and the reasons a request is refused. The HTTP edge turns them into
//! statuses and bodies; nothing here knows either.

use crate::domain::event::EventId;
use crate::domain::polling::ids::SessionId;
use crate::domain::polling::model::{Participant, Poll, Session, SessionStatus, Tally, Vote};
use crate::domain::polling::{RejectReason, Rejection};
use crate::store::tx::VoteRecord;

/// Why a polling request was refused. Nothing was written.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No session or poll has that id (or join code).
    NotFound(&'static str),
    /// The caller's role or session does not allow it.
    Forbidden(String),
    /// A transition the rules do not allow now.
    Conflict(String),
    /// The poll's results are withheld from this caller for now.
    Withheld,
    /// A vote the rules refused, told to the voter's topic too.
    Vote { reason: RejectReason, message: String },
    /// The rules broke a promise of their own: a bug, not the caller's.
    Internal(&'static str),
}

impl Refusal {
    /// The contract's code for it (CONTRACT §5), as events carry it too
    /// (`error:general`).
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::NotFound(_) => "not_found",
            Refusal::Forbidden(_) => "forbidden",
            Refusal::Conflict(_) => "conflict",
            Refusal::Withheld => "results_withheld",
            Refusal::Vote { reason, .. } => reason.as_str(),
            Refusal::Internal(_) => "internal",
        }
    }

    /// What it says to people.
    pub fn message(&self) -> &str {
        match self {
            Refusal::NotFound(message) | Refusal::Internal(message) => message,
            Refusal::Forbidden(message) | Refusal::Conflict(message) => message,
            Refusal::Vote { message, .. } => message,
            Refusal::Withheld => "the presenter has not shown this poll's results yet",
        }
    }
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Self {
        match rejection {
            Rejection::Conflict(message) => Refusal::Conflict(message),
            Rejection::Vote { reason, message } => Refusal::Vote { reason, message },
        }
    }
}

/// A command's or query's outcome: what it did, or why it was refused.
pub type Outcome<T> = Result<T, Refusal>;

/// A session after a change of state, with how many are present.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub session: Session,
    pub participant_count: i64,
}

/// A participant that joined, and the session's count with it.
#[derive(Debug, Clone)]
pub struct Joined {
    pub participant: Participant,
    pub session_id: SessionId,
    pub participant_count: i64,
}

/// An accepted vote: its confirmation, the payload of its `vote:accepted`
/// event on the voter's topic, serialized once for both.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub confirmation: String,
}

/// A session as a client resyncs from it, seen by one viewer.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub session: Session,
    /// Each poll in order, with what the viewer may see of it.
    pub polls: Vec<PollView>,
    pub participant_count: i64,
    /// The stream resumes after this id, with nothing missed.
    pub last_event_id: EventId,
}

/// A poll in a snapshot, as its viewer sees it.
#[derive(Debug, Clone)]
pub struct PollView {
    pub poll: Poll,
    /// Its results so far; `None` while they are withheld from the viewer.
    pub tally: Option<Tally>,
    /// The viewer's own vote on it, when the viewer is a participant.
    pub my_vote: Option<Vote>,
}

/// A poll and its results.
#[derive(Debug, Clone)]
pub struct PollResults {
    pub poll: Poll,
    pub tally: Tally,
}

/// A session's results as its presenter downloads them.
#[derive(Debug, Clone)]
pub struct SessionExport {
    pub session: Session,
    /// Every poll in order, with all its results (every text answer).
    pub polls: Vec<PollResults>,
    pub participant_count: i64,
    pub exported_at: chrono::DateTime<chrono::Utc>,
}

/// A non-anonymous poll's votes, for its presenter.
#[derive(Debug, Clone)]
pub struct PollVoters {
    pub poll: Poll,
    pub votes: Vec<VoteRecord>,
}

/// Where a session stands: what a session stream needs before it opens.
pub type SessionState = SessionStatus;
