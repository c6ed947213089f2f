//! The repositories of `store::tx` on plain maps, for the memory store.
//! The caller holds the store's lock for the whole command, which is what
//! makes it a transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::tables::PollingTables;
use crate::domain::event::EventId;
use crate::domain::polling::ids::{ParticipantId, PollId, SessionId};
use crate::domain::polling::model::{
    answer_key, group_answers, Choice, Participant, Poll, PollKind, Session, Tally, Vote,
};
use crate::store::error::StoreError;
use crate::store::tx::{
    ConnectionRepo, EntityKey, LogRepo, OutboxRepo, OutboxRow, ParticipantRepo, PollRepo, PresenceConnection,
    SessionRepo, VersionRepo, VoteRecord, VoteRepo, Voters,
};

type R<T> = Result<T, StoreError>;

/// A command's view of the tables, with the log's head at its start.
pub struct MemTx<'a> {
    pub tables: &'a mut PollingTables,
    pub head: EventId,
}

impl MemTx<'_> {
    /// Stores a participant whose room was made, counting it if present.
    fn add_participant(&mut self, participant: &Participant) {
        if participant.present {
            *self
                .tables
                .present_counts
                .entry(participant.session_id)
                .or_default() += 1;
        }
        self.tables
            .participants
            .insert(participant.id, participant.clone());
    }
}

#[async_trait]
impl LogRepo for MemTx<'_> {
    async fn head_event_id(&mut self) -> R<EventId> {
        Ok(self.head)
    }
}

#[async_trait]
impl SessionRepo for MemTx<'_> {
    async fn session(&mut self, id: SessionId) -> R<Option<Session>> {
        Ok(self.tables.sessions.get(&id).cloned())
    }

    async fn session_by_slug(&mut self, slug: &str) -> R<Option<Session>> {
        let id = self.tables.slugs.get(slug).copied();
        Ok(id.and_then(|id| self.tables.sessions.get(&id).cloned()))
    }

    async fn insert_session(&mut self, session: &Session) -> R<()> {
        self.tables.make_room(1)?;
        self.tables.slugs.insert(session.slug.clone(), session.id);
        self.tables.sessions.insert(session.id, session.clone());
        Ok(())
    }

    async fn update_session(&mut self, session: &Session) -> R<()> {
        if let Some(stored) = self.tables.sessions.get_mut(&session.id) {
            stored.status = session.status;
            stored.started_at = session.started_at;
            stored.ended_at = session.ended_at;
        }
        Ok(())
    }
}

#[async_trait]
impl PollRepo for MemTx<'_> {
    async fn poll(&mut self, id: PollId) -> R<Option<Poll>> {
        Ok(self.tables.polls.get(&id).cloned())
    }

    async fn polls_of(&mut self, session: SessionId) -> R<Vec<Poll>> {
        let ids = self
            .tables
            .session_polls
            .get(&session)
            .cloned()
            .unwrap_or_default();
        Ok(ids
            .iter()
            .filter_map(|id| self.tables.polls.get(id).cloned())
            .collect())
    }

    async fn open_poll(&mut self, session: SessionId) -> R<Option<Poll>> {
        let polls = self.polls_of(session).await?;
        Ok(polls
            .into_iter()
            .find(|p| p.status == crate::domain::polling::model::PollStatus::Open))
    }

    async fn poll_count(&mut self, session: SessionId) -> R<i64> {
        Ok(self
            .tables
            .session_polls
            .get(&session)
            .map_or(0, |p| p.len() as i64))
    }

    async fn insert_poll(&mut self, poll: &Poll) -> R<()> {
        self.tables.make_room(1)?;
        self.tables
            .session_polls
            .entry(poll.session_id)
            .or_default()
            .push(poll.id);
        self.tables.polls.insert(poll.id, poll.clone());
        Ok(())
    }

    async fn update_poll(&mut self, poll: &Poll) -> R<()> {
        if let Some(stored) = self.tables.polls.get_mut(&poll.id) {
            stored.status = poll.status;
            stored.activated_at = poll.activated_at;
            stored.closed_at = poll.closed_at;
            stored.results_revealed_at = poll.results_revealed_at;
            stored.closes_at = poll.closes_at;
        }
        Ok(())
    }

    async fn hide_answer(&mut self, poll: PollId, answer: &str, _at: DateTime<Utc>) -> R<()> {
        self.tables.make_room(1)?;
        self.tables.hidden_answers.insert((poll, answer_key(answer)));
        Ok(())
    }

    async fn answer_hidden(&mut self, poll: PollId, answer: &str) -> R<bool> {
        Ok(self.tables.hidden_answers.contains(&(poll, answer_key(answer))))
    }

    async fn timed_polls(&mut self) -> R<Vec<(PollId, DateTime<Utc>)>> {
        Ok(self
            .tables
            .polls
            .values()
            .filter(|p| p.status == crate::domain::polling::model::PollStatus::Open)
            .filter_map(|p| p.closes_at.map(|at| (p.id, at)))
            .collect())
    }
}

#[async_trait]
impl ParticipantRepo for MemTx<'_> {
    async fn participant(&mut self, id: ParticipantId) -> R<Option<Participant>> {
        Ok(self.tables.participants.get(&id).cloned())
    }

    async fn insert_participant(&mut self, participant: &Participant) -> R<()> {
        self.tables.make_room(1)?;
        self.add_participant(participant);
        Ok(())
    }

    async fn insert_participants(&mut self, participants: &[Participant]) -> R<()> {
        // All or none: a batch that does not fit leaves nothing behind.
        self.tables.make_room(participants.len())?;
        for participant in participants {
            self.add_participant(participant);
        }
        Ok(())
    }

    async fn set_present(&mut self, id: ParticipantId, present: bool) -> R<()> {
        if let Some(p) = self.tables.participants.get_mut(&id) {
            if p.present != present {
                p.present = present;
                *self.tables.present_counts.entry(p.session_id).or_default() += if present { 1 } else { -1 };
            }
        }
        Ok(())
    }

    async fn present_count(&mut self, session: SessionId) -> R<i64> {
        Ok(self.tables.present_counts.get(&session).copied().unwrap_or(0))
    }
}

#[async_trait]
impl VoteRepo for MemTx<'_> {
    async fn voters(&mut self, ballots: &[(ParticipantId, PollId)]) -> R<Voters> {
        let mut voters = Voters::default();
        for &(participant, poll) in ballots {
            if let Some(found) = self.tables.participants.get(&participant) {
                voters.participants.insert(participant, found.clone());
            }
            if self.tables.voted.contains(&(poll, participant)) {
                voters.voted.insert((poll, participant));
            }
        }
        Ok(voters)
    }

    async fn record_votes(&mut self, votes: &[Vote]) -> R<Vec<bool>> {
        self.tables.make_room(votes.len())?;
        Ok(votes.iter().map(|vote| self.tables.record(vote)).collect())
    }

    async fn tally(&mut self, poll: &Poll, text_limit: usize) -> R<Tally> {
        let votes = self
            .tables
            .votes
            .get(&poll.id)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut tally = Tally {
            vote_count: votes.len() as i64,
            ..Tally::default()
        };
        match &poll.kind {
            PollKind::MultipleChoice { options, .. } => {
                tally.option_counts = options
                    .iter()
                    .map(|o| (o.id, self.tables.option_counts.get(&o.id).copied().unwrap_or(0)))
                    .collect();
            }
            PollKind::RatingScale { min, max } => {
                tally.rating_counts = (*min..=*max)
                    .map(|v| {
                        (
                            v,
                            self.tables.rating_counts.get(&(poll.id, v)).copied().unwrap_or(0),
                        )
                    })
                    .collect();
            }
            PollKind::OpenText => {
                let hidden = &self.tables.hidden_answers;
                let answers = votes.iter().filter_map(|v| match &v.choice {
                    Choice::Text(t) if !hidden.contains(&(poll.id, answer_key(t))) => Some(t.as_str()),
                    _ => None,
                });
                let shown: Vec<&str> = answers.collect();
                let skip = shown.len().saturating_sub(text_limit);
                tally.texts = shown[skip..].iter().map(|t| t.to_string()).collect();
                tally.text_groups = group_answers(shown, text_limit);
            }
        }
        Ok(tally)
    }

    async fn latest_vote(&mut self, poll: PollId) -> R<Option<(String, DateTime<Utc>)>> {
        let votes = self
            .tables
            .votes
            .get(&poll)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(votes.last().map(|v| (v.id.to_string(), v.submitted_at)))
    }

    async fn votes_of(&mut self, poll: PollId) -> R<Vec<VoteRecord>> {
        let votes = self.tables.votes.get(&poll).cloned().unwrap_or_default();
        Ok(votes
            .into_iter()
            .map(|vote| VoteRecord {
                display_name: self
                    .tables
                    .participants
                    .get(&vote.participant_id)
                    .and_then(|p| p.display_name.clone()),
                vote,
            })
            .collect())
    }

    async fn votes_by(&mut self, participant: ParticipantId, polls: &[PollId]) -> R<Vec<Vote>> {
        Ok(polls
            .iter()
            .filter_map(|poll| self.tables.votes.get(poll))
            .flat_map(|votes| votes.iter().filter(|v| v.participant_id == participant))
            .cloned()
            .collect())
    }
}

#[async_trait]
impl ConnectionRepo for MemTx<'_> {
    async fn open_connection(&mut self, connection: &PresenceConnection) -> R<()> {
        self.tables.connections.insert(connection.id, connection.clone());
        Ok(())
    }

    async fn close_connection(&mut self, id: Uuid) -> R<()> {
        self.tables.connections.remove(&id);
        Ok(())
    }

    async fn connection_count(&mut self, participant: ParticipantId) -> R<i64> {
        Ok(self
            .tables
            .connections
            .values()
            .filter(|c| c.participant_id == participant)
            .count() as i64)
    }

    async fn touch_connections(&mut self, node_id: Uuid, now: DateTime<Utc>) -> R<()> {
        for connection in self.tables.connections.values_mut() {
            if connection.node_id == node_id {
                connection.last_seen = now;
            }
        }
        Ok(())
    }

    async fn expire_connections(&mut self, before: DateTime<Utc>) -> R<Vec<ParticipantId>> {
        let mut participants = Vec::new();
        self.tables.connections.retain(|_, c| {
            let alive = c.last_seen >= before;
            if !alive {
                participants.push(c.participant_id);
            }
            alive
        });
        participants.sort();
        participants.dedup();
        Ok(participants)
    }

    /// The memory store belongs to one process: one node.
    async fn live_nodes(&mut self, _node: Uuid, _now: DateTime<Utc>, _before: DateTime<Utc>) -> R<usize> {
        Ok(1)
    }

    /// No heartbeats are kept: the one node is the process itself.
    async fn node_heartbeats(&mut self) -> R<Vec<(Uuid, DateTime<Utc>)>> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl VersionRepo for MemTx<'_> {
    async fn entity_versions(&mut self, keys: &[EntityKey]) -> R<Vec<i64>> {
        Ok(keys
            .iter()
            .map(|key| self.tables.entity_versions.get(key).copied().unwrap_or(0))
            .collect())
    }

    async fn set_entity_versions(&mut self, versions: &[(EntityKey, i64)]) -> R<()> {
        for (key, version) in versions {
            if !self.tables.entity_versions.contains_key(key) {
                self.tables.make_room(1)?;
            }
            self.tables.entity_versions.insert(key.clone(), *version);
        }
        Ok(())
    }
}

/// The memory store has no SQL and so no outbox: nothing ever waits in it.
#[async_trait]
impl OutboxRepo for MemTx<'_> {
    async fn take_outbox(&mut self, _limit: i64) -> R<Vec<OutboxRow>> {
        Ok(Vec::new())
    }
}
