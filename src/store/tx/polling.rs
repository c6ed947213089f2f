//! Live polling's tables: sessions, polls, participants and votes with
//! their counters. Postgres implements them on a transaction; the memory
//! store on its maps.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::polling::ids::{ParticipantId, PollId, SessionId};
use crate::domain::polling::model::{Participant, Poll, Session, Tally, Vote};
use crate::store::error::StoreError;

/// A vote as the presenter sees it (non-anonymous polls only).
#[derive(Debug, Clone, PartialEq)]
pub struct VoteRecord {
    pub vote: Vote,
    pub display_name: Option<String>,
}

type R<T> = Result<T, StoreError>;

/// What a vote batch needs to know about its voters.
#[derive(Debug, Default)]
pub struct Voters {
    pub participants: HashMap<ParticipantId, Participant>,
    /// The `(poll, participant)` pairs that already have a vote.
    pub voted: HashSet<(PollId, ParticipantId)>,
}

/// What deciding a batch of votes reads.
#[derive(Debug, Default)]
pub struct BallotReads {
    /// Each poll the ballots name that exists, with its session.
    pub polls: HashMap<PollId, (Session, Poll)>,
    pub voters: Voters,
}

#[async_trait]
pub trait SessionRepo: Send {
    async fn session(&mut self, id: SessionId) -> R<Option<Session>>;
    async fn session_by_slug(&mut self, slug: &str) -> R<Option<Session>>;
    async fn insert_session(&mut self, session: &Session) -> R<()>;
    /// Writes status, started_at and ended_at.
    async fn update_session(&mut self, session: &Session) -> R<()>;
}

#[async_trait]
pub trait PollRepo: Send {
    async fn poll(&mut self, id: PollId) -> R<Option<Poll>>;
    /// The session's polls in order.
    async fn polls_of(&mut self, session: SessionId) -> R<Vec<Poll>>;
    async fn open_poll(&mut self, session: SessionId) -> R<Option<Poll>>;
    async fn poll_count(&mut self, session: SessionId) -> R<i64>;
    async fn insert_poll(&mut self, poll: &Poll) -> R<()>;
    /// Writes status, activated_at, closed_at, results_revealed_at and
    /// closes_at.
    async fn update_poll(&mut self, poll: &Poll) -> R<()>;
    /// Hides an open-text answer (and those with the same answer key) from
    /// the poll's tallies.
    async fn hide_answer(&mut self, poll: PollId, answer: &str, at: DateTime<Utc>) -> R<()>;
    /// Whether an answer with the same key as `answer` is hidden.
    async fn answer_hidden(&mut self, poll: PollId, answer: &str) -> R<bool>;
    /// Every open timed poll of every session, with when it closes.
    async fn timed_polls(&mut self) -> R<Vec<(PollId, DateTime<Utc>)>>;
}

#[async_trait]
pub trait ParticipantRepo: Send {
    async fn participant(&mut self, id: ParticipantId) -> R<Option<Participant>>;
    async fn insert_participant(&mut self, participant: &Participant) -> R<()>;
    /// Stores new participants and counts the present ones in their
    /// sessions, all at once (a batch of joins). A store may do it in one
    /// statement; this default inserts one at a time.
    async fn insert_participants(&mut self, participants: &[Participant]) -> R<()> {
        for participant in participants {
            self.insert_participant(participant).await?;
        }
        Ok(())
    }
    async fn set_present(&mut self, id: ParticipantId, present: bool) -> R<()>;
    async fn present_count(&mut self, session: SessionId) -> R<i64>;
}

/// Votes and their tallies. Its default methods read polls and sessions
/// too, one at a time; a store may answer them in one round trip.
#[async_trait]
pub trait VoteRepo: SessionRepo + PollRepo + Send {
    /// For each `(participant, poll)` of a vote batch: the participant, if
    /// it exists, and whether it already voted on that poll. One lookup for
    /// the whole batch.
    async fn voters(&mut self, ballots: &[(ParticipantId, PollId)]) -> R<Voters>;
    /// Stores the votes and bumps their polls' counters, all at once. For
    /// each vote, `false` when its participant already voted on the poll:
    /// the unique constraint decided.
    async fn record_votes(&mut self, votes: &[Vote]) -> R<Vec<bool>>;
    /// The poll's aggregates, with at most `text_limit` newest text answers.
    async fn tally(&mut self, poll: &Poll, text_limit: usize) -> R<Tally>;

    /// Everything a vote batch is decided on: the named polls with their
    /// sessions, and the voters (see [`VoteRepo::voters`]). A store may
    /// answer all of it at once; this default reads one thing at a time.
    async fn ballot_reads(
        &mut self,
        polls: &[PollId],
        ballots: &[(ParticipantId, PollId)],
    ) -> R<BallotReads> {
        let mut found = HashMap::new();
        for &id in polls {
            let Some(poll) = self.poll(id).await? else {
                continue;
            };
            if let Some(session) = self.session(poll.session_id).await? {
                found.insert(id, (session, poll));
            }
        }
        let voters = self.voters(ballots).await?;
        Ok(BallotReads { polls: found, voters })
    }

    /// [`VoteRepo::record_votes`], then the tallies of `polls` as they
    /// stand after it, in order. A store may send it all at once; this
    /// default runs one statement at a time.
    async fn record_votes_and_tally(
        &mut self,
        votes: &[Vote],
        polls: &[&Poll],
        text_limit: usize,
    ) -> R<(Vec<bool>, Vec<Tally>)> {
        let recorded = self.record_votes(votes).await?;
        let mut tallies = Vec::with_capacity(polls.len());
        for poll in polls {
            tallies.push(self.tally(poll, text_limit).await?);
        }
        Ok((recorded, tallies))
    }
    /// The newest vote's id and time (only `poll:results` reports it, so
    /// a vote batch does not pay for it).
    async fn latest_vote(&mut self, poll: PollId) -> R<Option<(String, DateTime<Utc>)>>;
    async fn votes_of(&mut self, poll: PollId) -> R<Vec<VoteRecord>>;
    /// The participant's own votes on the given polls.
    async fn votes_by(&mut self, participant: ParticipantId, polls: &[PollId]) -> R<Vec<Vote>>;
}
