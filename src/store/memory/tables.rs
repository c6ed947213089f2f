//! Live polling's tables, topic entity versions and presence rows of the
//! memory store, as plain maps, with the row budget that keeps it bounded.

use std::collections::{HashMap, HashSet};

use uuid::Uuid;

use crate::domain::polling::ids::{OptionId, ParticipantId, PollId, SessionId};
use crate::domain::polling::model::{Choice, Participant, Poll, Session, Vote};
use crate::store::error::StoreError;
use crate::store::tx::PresenceConnection;

#[derive(Default)]
pub struct PollingTables {
    pub(super) sessions: HashMap<SessionId, Session>,
    pub(super) slugs: HashMap<String, SessionId>,
    pub(super) polls: HashMap<PollId, Poll>,
    pub(super) session_polls: HashMap<SessionId, Vec<PollId>>,
    pub(super) participants: HashMap<ParticipantId, Participant>,
    /// Votes per poll, in the order accepted.
    pub(super) votes: HashMap<PollId, Vec<Vote>>,
    /// The one-vote-per-participant-per-poll rule, as a unique index would.
    pub(super) voted: HashSet<(PollId, ParticipantId)>,
    pub(super) option_counts: HashMap<OptionId, i64>,
    pub(super) rating_counts: HashMap<(PollId, i32), i64>,
    /// Hidden open-text answers, by poll and answer key.
    pub(super) hidden_answers: HashSet<(PollId, String)>,
    pub(super) connections: HashMap<Uuid, PresenceConnection>,
    /// Participants present per session, kept with every change.
    pub(super) present_counts: HashMap<SessionId, i64>,
    /// Current version per (topic, entity) of generic topics.
    pub(super) entity_versions: HashMap<(String, String), i64>,
    /// Rows that stay (sessions, polls, participants, votes, versions), and
    /// how many may.
    pub(super) rows: usize,
    pub(super) max_rows: usize,
}

impl PollingTables {
    pub fn with_max_rows(max_rows: usize) -> Self {
        PollingTables {
            max_rows,
            ..PollingTables::default()
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Room for `more` rows, or `Full`.
    pub(super) fn make_room(&mut self, more: usize) -> Result<(), StoreError> {
        if self.rows + more > self.max_rows {
            return Err(StoreError::full(format!(
                "the in-memory store holds its maximum of {} rows",
                self.max_rows
            )));
        }
        self.rows += more;
        Ok(())
    }

    /// Stores one vote and bumps its counters; `false` for a second vote of
    /// the same participant on the same poll.
    pub(super) fn record(&mut self, vote: &Vote) -> bool {
        if !self.voted.insert((vote.poll_id, vote.participant_id)) {
            return false;
        }
        self.votes.entry(vote.poll_id).or_default().push(vote.clone());
        if let Some(poll) = self.polls.get_mut(&vote.poll_id) {
            poll.vote_count += 1;
        }
        match &vote.choice {
            Choice::Options(ids) => {
                for id in ids {
                    *self.option_counts.entry(*id).or_default() += 1;
                }
            }
            Choice::Rating(value) => *self.rating_counts.entry((vote.poll_id, *value)).or_default() += 1,
            Choice::Text(_) => {}
        }
        true
    }
}
