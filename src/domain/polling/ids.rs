//! Identifier newtypes: a session id cannot be passed where a poll id is
//! expected, and every id from a client is parsed once, at the edge.

use std::fmt;

use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(Uuid::new_v4())
            }

            /// Parses a client's id; the error names what was expected.
            pub fn parse(raw: &str) -> Result<Self, String> {
                Uuid::parse_str(raw)
                    .map($name)
                    .map_err(|_| format!("{} must be a UUID", $what))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A polling session.
    SessionId, "sessionId"
);
id_type!(
    /// The presenter who created a session (the holder of its presenter token).
    PresenterId, "presenterId"
);
id_type!(
    /// A poll within a session.
    PollId, "pollId"
);
id_type!(
    /// One option of a multiple-choice poll.
    OptionId, "optionId"
);
id_type!(
    /// A participant of one session.
    ParticipantId, "participantId"
);
id_type!(
    /// One accepted vote.
    VoteId, "voteId"
);
