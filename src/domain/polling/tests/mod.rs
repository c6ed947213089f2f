//! Tests of the live polling domain (CONTRACT §2), split by concern: the
//! session and poll state machines, participants and presence, votes and
//! every rejection reason, poll definitions, results, and the events' wire
//! form. No IO, fixed times.
//!
//! The rules are one pure function, `decide(&state, command)`, so their
//! tests read given/when/then:
//!
//! ```text
//! let state = active_session().with_present_participant().with_poll(&poll);
//! given(&state).when(close(&poll)).then_events(&[DomainEvent::PollClosed { .. }]);
//! given(&state).when(vote(&state, &poll, data)).then_rejected(RejectReason::PollClosed);
//! given(&state).when(activate(&poll)).then_conflict();
//! ```
//!
//! This file holds the fixtures they share: fixed times, states built up
//! from a session, polls of each kind, one constructor per command, the
//! given/when/then helper itself, and tallies.

mod input;
mod poll;
mod presence;
mod results;
mod session;
mod visibility;
mod vote;
mod vote_content;
mod wire;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::decide::{decide, Command, State};
use super::events::DomainEvent;
use super::ids::{OptionId, ParticipantId, PollId, PresenterId, SessionId, VoteId};
use super::input::{FieldError, PollDraft, PollInput};
use super::model::{
    Choice, CloseReason, Participant, Poll, PollKind, PollOption, PollStatus, ResultsVisibility, Session,
    SessionStatus, Tally, Vote,
};
use super::rejection::{RejectReason, Rejection};

// ------------------------------------------------------------------ times

/// A fixed instant, `secs` after 2027-01-15T08:00:00Z.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

/// The time every command in these tests happens at.
fn now() -> DateTime<Utc> {
    t(60)
}

/// `now()` as the wire shows it.
const NOW_TEXT: &str = "2027-01-15T08:01:00.000Z";

// ----------------------------------------------------------------- states

fn session(status: SessionStatus) -> Session {
    Session {
        id: SessionId::new(),
        title: "All hands".into(),
        slug: "ABC123".into(),
        presenter_id: PresenterId::new(),
        status,
        created_at: t(0),
        started_at: (status != SessionStatus::Draft).then(|| t(1)),
        ended_at: (status == SessionStatus::Ended).then(|| t(2)),
    }
}

/// A session in `status` with no polls and nobody in it.
fn state_of(status: SessionStatus) -> State {
    State {
        session: session(status),
        polls: Vec::new(),
        poll_count: 0,
        participant_count: 0,
        participant: None,
        has_voted: false,
    }
}

fn draft_session() -> State {
    state_of(SessionStatus::Draft)
}

fn active_session() -> State {
    state_of(SessionStatus::Active)
}

fn ended_session() -> State {
    state_of(SessionStatus::Ended)
}

/// Builds a state up from one of the sessions above:
/// `active_session().with_present_participant().with_poll(&poll)`.
trait StateBuilder {
    /// The state with `poll` loaded (and counted).
    fn with_poll(self, poll: &Poll) -> State;
    /// The session already has `count` polls (none of them loaded).
    fn with_poll_count(self, count: i64) -> State;
    /// `count` participants are present.
    fn with_participant_count(self, count: i64) -> State;
    /// The participant the command is about ("Ada"), present, with two
    /// others: three present in all.
    fn with_present_participant(self) -> State;
    /// The participant the command is about ("Ada"), absent; two others
    /// are present.
    fn with_absent_participant(self) -> State;
    /// The participant already voted on the poll the command names.
    fn having_voted(self) -> State;
}

impl StateBuilder for State {
    fn with_poll(mut self, poll: &Poll) -> State {
        self.polls.push(poll.clone());
        self.poll_count += 1;
        self
    }

    fn with_poll_count(mut self, count: i64) -> State {
        self.poll_count = count;
        self
    }

    fn with_participant_count(mut self, count: i64) -> State {
        self.participant_count = count;
        self
    }

    fn with_present_participant(self) -> State {
        with_participant(self, true)
    }

    fn with_absent_participant(self) -> State {
        with_participant(self, false)
    }

    fn having_voted(mut self) -> State {
        self.has_voted = true;
        self
    }
}

fn with_participant(mut state: State, present: bool) -> State {
    state.participant = Some(Participant {
        id: ParticipantId::new(),
        session_id: state.session.id,
        display_name: Some("Ada".into()),
        joined_at: t(5),
        present,
    });
    state.participant_count = if present { 3 } else { 2 };
    state
}

/// The id of the participant the state is about.
fn the_participant(state: &State) -> ParticipantId {
    state.participant.as_ref().expect("a participant in the state").id
}

/// An active session with one open poll (made by `make`) and one present
/// participant: the state a vote is usually decided in.
fn voting_on(make: impl Fn(&State, PollStatus) -> Poll) -> (State, Poll) {
    let state = active_session().with_present_participant();
    let poll = make(&state, PollStatus::Open);
    (state.with_poll(&poll), poll)
}

// ------------------------------------------------------------------ polls

fn options(n: usize) -> Vec<PollOption> {
    (0..n)
        .map(|i| PollOption {
            id: OptionId::new(),
            text: format!("Option {}", i + 1),
            sequence_order: i as i32 + 1,
        })
        .collect()
}

/// A poll of the state's session, next in its order, with no votes.
fn poll(state: &State, kind: PollKind, status: PollStatus) -> Poll {
    Poll {
        id: PollId::new(),
        session_id: state.session.id,
        question: "How was it?".into(),
        kind,
        is_anonymous: true,
        sequence_order: state.poll_count as i32 + 1,
        status,
        created_at: t(10),
        activated_at: (status != PollStatus::Draft).then(|| t(11)),
        closed_at: (status == PollStatus::Closed).then(|| t(12)),
        vote_count: 0,
        results_visibility: ResultsVisibility::Always,
        results_revealed_at: None,
        closes_at: None,
    }
}

/// A multiple-choice poll with three options.
fn choice_poll(state: &State, status: PollStatus, allow_multiple: bool) -> Poll {
    let kind = PollKind::MultipleChoice {
        options: options(3),
        allow_multiple,
    };
    poll(state, kind, status)
}

fn single_choice_poll(state: &State, status: PollStatus) -> Poll {
    choice_poll(state, status, false)
}

fn multiple_choice_poll(state: &State, status: PollStatus) -> Poll {
    choice_poll(state, status, true)
}

/// A rating poll from 1 to 5.
fn rating_poll(state: &State, status: PollStatus) -> Poll {
    poll(state, PollKind::RatingScale { min: 1, max: 5 }, status)
}

fn text_poll(state: &State, status: PollStatus) -> Poll {
    poll(state, PollKind::OpenText, status)
}

trait PollBuilder {
    /// The poll with `count` accepted votes.
    fn with_votes(self, count: i64) -> Poll;
}

impl PollBuilder for Poll {
    fn with_votes(mut self, count: i64) -> Poll {
        self.vote_count = count;
        self
    }
}

fn option_id(poll: &Poll, index: usize) -> String {
    poll.option_ids()[index].to_string()
}

/// A poll definition as a client sends it, parsed.
fn parse_poll(input: Value) -> Result<PollDraft, FieldError> {
    PollDraft::parse(serde_json::from_value::<PollInput>(input).expect("a well-formed PollInput"))
}

// --------------------------------------------------------------- commands

fn start_session() -> Command {
    Command::StartSession { at: now() }
}

fn end_session() -> Command {
    Command::EndSession { at: now() }
}

fn create_poll(draft: PollDraft) -> Command {
    Command::CreatePoll {
        poll_id: PollId::new(),
        draft,
        at: now(),
    }
}

fn activate(poll: &Poll) -> Command {
    Command::ActivatePoll {
        poll_id: poll.id,
        at: now(),
        duration: None,
    }
}

fn close(poll: &Poll) -> Command {
    Command::ClosePoll {
        poll_id: poll.id,
        at: now(),
        reason: CloseReason::Presenter,
    }
}

fn join(participant_id: ParticipantId, display_name: Option<&str>) -> Command {
    Command::Join {
        participant_id,
        display_name: display_name.map(String::from),
        at: now(),
    }
}

/// A stream of the state's participant opened.
fn mark_present(state: &State) -> Command {
    Command::MarkPresent {
        participant_id: the_participant(state),
        at: now(),
    }
}

/// The state's participant's last stream has been closed for the grace period.
fn mark_absent(state: &State) -> Command {
    Command::MarkAbsent {
        participant_id: the_participant(state),
        at: now(),
    }
}

/// The state's participant votes `vote_data` on `poll` (a fresh vote id;
/// the client says it sent it a second before `now()`).
fn vote(state: &State, poll: &Poll, vote_data: Value) -> Command {
    Command::SubmitVote {
        vote_id: VoteId::new(),
        participant_id: the_participant(state),
        poll_id: poll.id,
        vote_data,
        at: now(),
        client_submitted_at: Some(t(59)),
    }
}

// ------------------------------------------------------- given/when/then

/// The state a command is decided in.
struct Given<'a>(&'a State);

fn given(state: &State) -> Given<'_> {
    Given(state)
}

impl Given<'_> {
    /// Decides `command` in the given state.
    fn when(self, command: Command) -> Then {
        let shown = format!("{command:?}");
        Then {
            command: shown,
            outcome: decide(self.0, command),
        }
    }
}

/// What `decide` answered, and the command it answered (for messages).
struct Then {
    command: String,
    outcome: Result<Vec<DomainEvent>, Rejection>,
}

impl Then {
    /// Exactly these events, in this order.
    #[track_caller]
    fn then_events(self, expected: &[DomainEvent]) {
        assert_eq!(self.events().as_slice(), expected);
    }

    /// Accepted, and nothing changes: no events.
    #[track_caller]
    fn then_nothing(self) {
        self.then_events(&[]);
    }

    /// Refused as a transition the state machine does not allow.
    #[track_caller]
    fn then_conflict(self) {
        assert!(
            matches!(self.outcome, Err(Rejection::Conflict(_))),
            "expected a conflict, got {:?} for {}",
            self.outcome,
            self.command
        );
    }

    /// Refused as a vote, for `reason`.
    #[track_caller]
    fn then_rejected(self, reason: RejectReason) {
        match self.outcome {
            Err(Rejection::Vote { reason: got, .. }) => {
                assert_eq!(got, reason, "for {}", self.command)
            }
            other => panic!("expected a vote rejection, got {other:?} for {}", self.command),
        }
    }

    /// One `VoteAccepted`, recording `choice`.
    #[track_caller]
    fn then_accepted_as(self, choice: Choice) {
        let command = self.command.clone();
        match self.events().as_slice() {
            [DomainEvent::VoteAccepted { vote, .. }] => assert_eq!(vote.choice, choice, "for {command}"),
            other => panic!("expected one VoteAccepted, got {other:?} for {command}"),
        }
    }

    /// The events of an accepted command, for checks written out by hand.
    #[track_caller]
    fn events(self) -> Vec<DomainEvent> {
        match self.outcome {
            Ok(events) => events,
            Err(rejection) => panic!("expected events, got {rejection:?} for {}", self.command),
        }
    }
}

// ---------------------------------------------------------------- tallies

/// A choice poll's tally with `counts` votes per option, in option order.
fn tally_of(poll: &Poll, counts: &[i64]) -> Tally {
    Tally {
        vote_count: counts.iter().sum(),
        option_counts: poll
            .option_ids()
            .into_iter()
            .zip(counts.iter().copied())
            .collect(),
        ..Tally::default()
    }
}

/// A 1-to-5 rating poll's tally of these ratings.
fn rating_tally(values: &[i32]) -> Tally {
    let mut counts: BTreeMap<i32, i64> = (1..=5).map(|v| (v, 0)).collect();
    for v in values {
        *counts.get_mut(v).unwrap() += 1;
    }
    Tally {
        vote_count: values.len() as i64,
        rating_counts: counts,
        ..Tally::default()
    }
}
