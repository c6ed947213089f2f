//! How the rules say no: a refused vote with its catalog reason, or a
//! transition the state machine does not allow.

/// Why a vote was refused: exactly the catalog's reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    PollClosed,
    DuplicateVote,
    PollNotActive,
    InvalidOption,
    InvalidRating,
    InvalidText,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::PollClosed => "poll_closed",
            RejectReason::DuplicateVote => "duplicate_vote",
            RejectReason::PollNotActive => "poll_not_active",
            RejectReason::InvalidOption => "invalid_option",
            RejectReason::InvalidRating => "invalid_rating",
            RejectReason::InvalidText => "invalid_text",
        }
    }

    /// Whether the vote's content is at fault (an unknown option, a rating
    /// out of range, a bad text), rather than the state of the poll or of
    /// the participant.
    pub fn is_content(self) -> bool {
        matches!(
            self,
            RejectReason::InvalidOption | RejectReason::InvalidRating | RejectReason::InvalidText
        )
    }
}

/// A command the rules refused; nothing changes.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// A refused vote: answered with its reason and told to the voter's topic.
    Vote { reason: RejectReason, message: String },
    /// A transition the state machine does not allow.
    Conflict(String),
}
