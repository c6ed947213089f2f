//! What every polling command runs with inside its transaction: the
//! transaction, its request's trace id and time, and the loaders of the
//! state the rules (`domain::polling::decide`) read.

use chrono::{DateTime, Utc};

use super::outcome::Refusal;
use crate::domain::event::{NewEvent, TraceId};
use crate::domain::polling::ids::{ParticipantId, PollId, PresenterId, SessionId};
use crate::domain::polling::model::{Poll, Session};
use crate::domain::polling::{DomainEvent, State};
use crate::store::StoreError;
use crate::store::Tx;

/// How a client names a session: by id or by its join code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionKey {
    Id(SessionId),
    Slug(String),
}

impl SessionKey {
    pub fn parse(raw: &str) -> Self {
        match SessionId::parse(raw) {
            Ok(id) => SessionKey::Id(id),
            Err(_) => SessionKey::Slug(raw.to_ascii_lowercase()),
        }
    }
}

/// Who is asking, as far as live polling cares.
#[derive(Debug, Clone, Copy)]
pub enum Actor {
    Presenter(SessionId, PresenterId),
    Participant(SessionId, ParticipantId),
}

/// A request's trace id and the time it is decided at.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub trace_id: TraceId,
    pub at: DateTime<Utc>,
}

impl Stamp {
    pub fn new(trace_id: TraceId) -> Self {
        Stamp {
            trace_id,
            at: crate::domain::event::now_millis(),
        }
    }
}

/// Why a command stops early: the request is refused (nothing written), or
/// the store failed (the transaction is lost).
#[derive(Debug)]
pub enum Stop {
    Refused(Refusal),
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(error: StoreError) -> Self {
        Stop::Store(error)
    }
}

impl From<Refusal> for Stop {
    fn from(refusal: Refusal) -> Self {
        Stop::Refused(refusal)
    }
}

/// A command's result as the store wants it: its events and outcome, a
/// refusal (no events), or the store's error.
pub fn settle<T>(
    result: Result<(Vec<NewEvent>, T), Stop>,
) -> Result<(Vec<NewEvent>, Result<T, Refusal>), StoreError> {
    match result {
        Ok((events, outcome)) => Ok((events, Ok(outcome))),
        Err(Stop::Refused(refusal)) => Ok((Vec::new(), Err(refusal))),
        Err(Stop::Store(error)) => Err(error),
    }
}

/// A command at work: its transaction and its request's stamp.
pub struct Ctx<'a> {
    pub tx: &'a mut dyn Tx,
    pub stamp: &'a Stamp,
}

impl<'a> Ctx<'a> {
    pub fn new(tx: &'a mut dyn Tx, stamp: &'a Stamp) -> Self {
        Ctx { tx, stamp }
    }

    pub fn at(&self) -> DateTime<Utc> {
        self.stamp.at
    }

    /// Domain events as events to append, with this request's trace id.
    pub fn events(&self, events: &[DomainEvent]) -> Vec<NewEvent> {
        events
            .iter()
            .map(|e| e.to_new_event(&self.stamp.trace_id, None))
            .collect()
    }

    pub async fn session(&mut self, key: &SessionKey) -> Result<Session, Stop> {
        let found = match key {
            SessionKey::Id(id) => self.tx.session(*id).await?,
            SessionKey::Slug(slug) => self.tx.session_by_slug(slug).await?,
        };
        found.ok_or(Stop::Refused(Refusal::NotFound("no such session")))
    }

    pub async fn poll(&mut self, id: PollId) -> Result<Poll, Stop> {
        let found = self.tx.poll(id).await?;
        found.ok_or(Stop::Refused(Refusal::NotFound("no such poll")))
    }

    /// The state `decide` reads, for one session, with its present count.
    /// Counting participants is the one cost that grows with the session,
    /// so only commands that report a count pay for it.
    pub async fn state_of(&mut self, session: Session, polls: Vec<Poll>) -> Result<State, StoreError> {
        let mut state = self.bare_state_of(session, polls).await?;
        state.participant_count = self.tx.present_count(state.session.id).await?;
        Ok(state)
    }

    /// The state without the present count: the session, the given polls
    /// and its open one, and how many polls it has.
    pub async fn bare_state_of(&mut self, session: Session, polls: Vec<Poll>) -> Result<State, StoreError> {
        let mut polls = polls;
        if let Some(open) = self.tx.open_poll(session.id).await? {
            if !polls.iter().any(|p| p.id == open.id) {
                polls.push(open);
            }
        }
        Ok(State {
            poll_count: self.tx.poll_count(session.id).await?,
            participant_count: 0,
            session,
            polls,
            participant: None,
            has_voted: false,
        })
    }
}

/// Refuses anyone but the session's presenter.
pub fn require_presenter(session: &Session, presenter: PresenterId) -> Result<(), Stop> {
    if session.presenter_id == presenter {
        Ok(())
    } else {
        Err(Stop::Refused(Refusal::Forbidden(
            "only this session's presenter may do that".into(),
        )))
    }
}
