//! The rules of live polling as one pure function:
//! `decide(state, command) → events | rejection`. No IO, no clock, no
//! randomness: the caller passes ids and times in, so every rule is tested
//! as given/when/then.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::events::{DomainEvent, RevealReason};
use super::ids::{ParticipantId, PollId, VoteId};
use super::input::{parse_choice, PollDraft, PollDuration};
use super::model::{CloseReason, Participant, Poll, PollKind, PollStatus, Session, SessionStatus, Vote};
use super::rejection::{RejectReason, Rejection};

#[derive(Debug, Clone)]
pub enum Command {
    StartSession {
        at: DateTime<Utc>,
    },
    EndSession {
        at: DateTime<Utc>,
    },
    CreatePoll {
        poll_id: PollId,
        draft: PollDraft,
        at: DateTime<Utc>,
    },
    ActivatePoll {
        poll_id: PollId,
        at: DateTime<Utc>,
        /// How long the poll stays open, for a timed poll.
        duration: Option<PollDuration>,
    },
    ClosePoll {
        poll_id: PollId,
        at: DateTime<Utc>,
        /// `Presenter`, or `Timer` when the server closes a timed poll
        /// (refused unless its time has come).
        reason: CloseReason,
    },
    /// The presenter makes a poll's withheld results public.
    RevealResults {
        poll_id: PollId,
        at: DateTime<Utc>,
    },
    /// The presenter hides an open-text answer (and every answer that
    /// differs from it only in case or spacing) from the results.
    HideAnswer {
        poll_id: PollId,
        answer: String,
        /// Whether that answer is hidden already (read by the caller).
        already_hidden: bool,
        at: DateTime<Utc>,
    },
    Join {
        participant_id: ParticipantId,
        display_name: Option<String>,
        at: DateTime<Utc>,
    },
    SubmitVote {
        vote_id: VoteId,
        participant_id: ParticipantId,
        poll_id: PollId,
        vote_data: Value,
        at: DateTime<Utc>,
        client_submitted_at: Option<DateTime<Utc>>,
    },
    /// A stream of an absent participant opened: it is present again.
    MarkPresent {
        participant_id: ParticipantId,
        at: DateTime<Utc>,
    },
    /// Its last stream has been closed for the whole grace period.
    MarkAbsent {
        participant_id: ParticipantId,
        at: DateTime<Utc>,
    },
}

/// What a command may look at: one session and the parts of it the command
/// touches, loaded by the caller in the command's transaction.
#[derive(Debug, Clone)]
pub struct State {
    pub session: Session,
    /// The polls the command names, plus the session's open poll if any.
    pub polls: Vec<Poll>,
    /// How many polls the session has (for the next poll's order).
    pub poll_count: i64,
    /// Participants present now.
    pub participant_count: i64,
    /// The participant the command is about, if any.
    pub participant: Option<Participant>,
    /// Whether that participant already voted on the poll the command names.
    pub has_voted: bool,
}

impl State {
    fn poll(&self, id: PollId) -> Result<&Poll, Rejection> {
        self.polls
            .iter()
            .find(|p| p.id == id)
            .ok_or_else(|| Rejection::Conflict("the poll does not belong to this session".into()))
    }

    pub fn open_poll(&self) -> Option<&Poll> {
        self.polls.iter().find(|p| p.status == PollStatus::Open)
    }

    fn present_participant(&self, id: ParticipantId) -> Result<&Participant, Rejection> {
        self.participant
            .as_ref()
            .filter(|p| p.id == id)
            .ok_or_else(|| Rejection::Conflict("unknown participant".into()))
    }
}

fn conflict(message: &str) -> Rejection {
    Rejection::Conflict(message.to_string())
}

/// The events of closing an open poll: `poll:closed`, and the reveal of
/// results that were withheld until the close.
fn closing(poll: &Poll, at: DateTime<Utc>, reason: CloseReason) -> Vec<DomainEvent> {
    let mut events = vec![DomainEvent::PollClosed {
        poll_id: poll.id,
        session_id: poll.session_id,
        at,
        final_vote_count: poll.vote_count,
        reason,
    }];
    if poll.results_visibility.revealed_at_close() && !poll.results_public() {
        events.push(DomainEvent::PollResultsRevealed {
            poll_id: poll.id,
            session_id: poll.session_id,
            at,
            reason: RevealReason::Closed,
        });
    }
    events
}

pub fn decide(state: &State, command: Command) -> Result<Vec<DomainEvent>, Rejection> {
    let session = &state.session;
    match command {
        Command::StartSession { at } => match session.status {
            SessionStatus::Draft => Ok(vec![DomainEvent::SessionStarted {
                session_id: session.id,
                at,
                participant_count: state.participant_count,
            }]),
            SessionStatus::Active => Err(conflict("the session is already active")),
            SessionStatus::Ended => Err(conflict("the session has ended")),
        },
        Command::EndSession { at } => match session.status {
            SessionStatus::Active => {
                let mut events: Vec<DomainEvent> = state
                    .open_poll()
                    .map(|p| closing(p, at, CloseReason::SessionEnded))
                    .unwrap_or_default();
                events.push(DomainEvent::SessionEnded {
                    session_id: session.id,
                    at,
                    final_participant_count: state.participant_count,
                });
                Ok(events)
            }
            SessionStatus::Draft => Err(conflict("the session has not started")),
            SessionStatus::Ended => Err(conflict("the session has already ended")),
        },
        Command::CreatePoll { poll_id, draft, at } => {
            if session.status == SessionStatus::Ended {
                return Err(conflict("the session has ended"));
            }
            Ok(vec![DomainEvent::PollCreated(Poll {
                id: poll_id,
                session_id: session.id,
                question: draft.question,
                kind: draft.kind,
                is_anonymous: draft.is_anonymous,
                sequence_order: state.poll_count as i32 + 1,
                status: PollStatus::Draft,
                created_at: at,
                activated_at: None,
                closed_at: None,
                vote_count: 0,
                results_visibility: draft.results_visibility,
                results_revealed_at: None,
                closes_at: None,
            })])
        }
        Command::ActivatePoll {
            poll_id,
            at,
            duration,
        } => {
            match session.status {
                SessionStatus::Active => {}
                SessionStatus::Draft => return Err(conflict("start the session before activating a poll")),
                SessionStatus::Ended => return Err(conflict("the session has ended")),
            }
            let poll = state.poll(poll_id)?;
            match poll.status {
                PollStatus::Draft => {}
                PollStatus::Open => return Err(conflict("the poll is already open")),
                PollStatus::Closed => return Err(conflict("a closed poll does not reopen")),
            }
            let mut events: Vec<DomainEvent> = state
                .open_poll()
                .map(|p| closing(p, at, CloseReason::Replaced))
                .unwrap_or_default();
            events.push(DomainEvent::PollActivated {
                poll_id,
                session_id: session.id,
                question: poll.question.clone(),
                at,
                closes_at: duration.map(|d| d.after(at)),
            });
            Ok(events)
        }
        Command::ClosePoll { poll_id, at, reason } => {
            let poll = state.poll(poll_id)?;
            match poll.status {
                PollStatus::Open => {}
                PollStatus::Draft => return Err(conflict("the poll is not open")),
                PollStatus::Closed => return Err(conflict("the poll is already closed")),
            }
            if reason == CloseReason::Timer && poll.closes_at.is_none_or(|due| due > at) {
                return Err(conflict("the poll's time has not run out"));
            }
            Ok(closing(poll, at, reason))
        }
        Command::RevealResults { poll_id, at } => {
            let poll = state.poll(poll_id)?;
            if poll.results_public() {
                return Err(conflict("the poll's results are already shown"));
            }
            if poll.status == PollStatus::Draft {
                return Err(conflict("the poll has not been opened"));
            }
            Ok(vec![DomainEvent::PollResultsRevealed {
                poll_id,
                session_id: session.id,
                at,
                reason: RevealReason::Presenter,
            }])
        }
        Command::HideAnswer {
            poll_id,
            answer,
            already_hidden,
            at,
        } => {
            let poll = state.poll(poll_id)?;
            if poll.kind != PollKind::OpenText {
                return Err(conflict("only open-text answers can be hidden"));
            }
            if already_hidden {
                return Err(conflict("that answer is hidden already"));
            }
            Ok(vec![DomainEvent::AnswerHidden {
                poll_id,
                session_id: session.id,
                answer,
                at,
            }])
        }
        Command::Join {
            participant_id,
            display_name,
            at,
        } => {
            if session.status == SessionStatus::Ended {
                return Err(conflict("the session has ended"));
            }
            Ok(vec![DomainEvent::ParticipantJoined {
                participant: Participant {
                    id: participant_id,
                    session_id: session.id,
                    display_name,
                    joined_at: at,
                    present: true,
                },
                at,
                participant_count: state.participant_count + 1,
            }])
        }
        Command::SubmitVote {
            vote_id,
            participant_id,
            poll_id,
            vote_data,
            at,
            client_submitted_at,
        } => {
            state.present_participant(participant_id)?;
            let poll = state.poll(poll_id)?;
            let refuse = |reason: RejectReason, message: &str| Rejection::Vote {
                reason,
                message: message.to_string(),
            };
            match poll.status {
                PollStatus::Draft => {
                    return Err(refuse(RejectReason::PollNotActive, "the poll is not open yet"))
                }
                PollStatus::Closed => return Err(refuse(RejectReason::PollClosed, "the poll is closed")),
                PollStatus::Open => {}
            }
            if state.has_voted {
                return Err(refuse(
                    RejectReason::DuplicateVote,
                    "participant already voted on this poll",
                ));
            }
            let choice = parse_choice(poll, &vote_data)
                .map_err(|(reason, message)| Rejection::Vote { reason, message })?;
            Ok(vec![DomainEvent::VoteAccepted {
                vote: Vote {
                    id: vote_id,
                    poll_id,
                    participant_id,
                    choice,
                    submitted_at: at,
                    client_submitted_at,
                },
                session_id: session.id,
            }])
        }
        Command::MarkPresent { participant_id, at } => {
            let participant = state.present_participant(participant_id)?;
            if participant.present || session.status == SessionStatus::Ended {
                return Ok(Vec::new());
            }
            Ok(vec![DomainEvent::ParticipantJoined {
                participant: Participant {
                    present: true,
                    ..participant.clone()
                },
                at,
                participant_count: state.participant_count + 1,
            }])
        }
        Command::MarkAbsent { participant_id, at } => {
            let participant = state.present_participant(participant_id)?;
            // Attendance is frozen once the session has ended.
            if !participant.present || session.status == SessionStatus::Ended {
                return Ok(Vec::new());
            }
            Ok(vec![DomainEvent::ParticipantDisconnected {
                participant_id,
                session_id: session.id,
                at,
                participant_count: (state.participant_count - 1).max(0),
            }])
        }
    }
}
