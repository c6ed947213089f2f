//! [`PollingTx`] on a Postgres transaction: the live polling tables of
//! `sql/0002_polling.sql`. The vote path's statements, sent pipelined,
//! live in `postgres_votes`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::Row;
use uuid::Uuid;

use super::polling::{BallotReads, PollingTx, PresenceConnection, VoteRecord, Voters};
use super::postgres::classify;
use super::StoreError;
use crate::domain::event::EventId;
use crate::domain::polling::ids::{OptionId, ParticipantId, PollId, PresenterId, SessionId, VoteId};
use crate::domain::polling::model::{
    Choice, Participant, Poll, PollKind, PollOption, PollStatus, Session, SessionStatus, Tally, Vote,
};

type R<T> = Result<T, StoreError>;

/// The polling tables as seen from a connection inside a transaction (the
/// caller began it and ends it).
pub struct PgTx<'a> {
    pub(super) tx: &'a deadpool_postgres::ClientWrapper,
}

impl<'a> PgTx<'a> {
    pub fn new(tx: &'a deadpool_postgres::ClientWrapper) -> Self {
        PgTx { tx }
    }

    pub(super) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> R<Vec<Row>> {
        let statement = self.tx.prepare_cached(sql).await.map_err(classify)?;
        self.tx.query(&statement, params).await.map_err(classify)
    }

    async fn execute(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> R<u64> {
        let statement = self.tx.prepare_cached(sql).await.map_err(classify)?;
        self.tx.execute(&statement, params).await.map_err(classify)
    }

    async fn options_of(&self, polls: &[Uuid]) -> R<BTreeMap<Uuid, Vec<PollOption>>> {
        Ok(options_by_poll(self.query(OPTIONS_OF, &[&polls]).await?))
    }

    async fn polls_where(&self, condition: &str, param: &Uuid) -> R<Vec<Poll>> {
        let sql = format!("SELECT {POLL_COLUMNS} FROM polls WHERE {condition} ORDER BY sequence_order");
        let rows = self.query(&sql, &[param]).await?;
        let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
        let mut options = if rows.iter().any(|r| r.get::<_, String>(4) == "multiple_choice") {
            self.options_of(&ids).await?
        } else {
            BTreeMap::new()
        };
        rows.iter()
            .map(|row| poll_from_row(row, options.remove(&row.get::<_, Uuid>(0)).unwrap_or_default()))
            .collect()
    }
}

pub(super) const SESSION_COLUMNS: &str =
    "id, slug, title, presenter_id, status, created_at, started_at, ended_at";
pub(super) const POLL_COLUMNS: &str =
    "id, session_id, question, is_anonymous, poll_type, allow_multiple, min_rating, \
     max_rating, sequence_order, status, created_at, activated_at, closed_at, vote_count";

pub(super) const OPTIONS_OF: &str = "SELECT poll_id, id, option_text, sequence_order FROM poll_options
      WHERE poll_id = ANY($1) ORDER BY poll_id, sequence_order";

/// Rows of [`OPTIONS_OF`], grouped by poll.
pub(super) fn options_by_poll(rows: Vec<Row>) -> BTreeMap<Uuid, Vec<PollOption>> {
    let mut by_poll: BTreeMap<Uuid, Vec<PollOption>> = BTreeMap::new();
    for row in rows {
        by_poll.entry(row.get(0)).or_default().push(PollOption {
            id: OptionId(row.get(1)),
            text: row.get(2),
            sequence_order: row.get(3),
        });
    }
    by_poll
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("unexpected {what} in the database"))
}

pub(super) fn session_from_row(row: &Row) -> R<Session> {
    Ok(Session {
        id: SessionId(row.get(0)),
        slug: row.get(1),
        title: row.get(2),
        presenter_id: PresenterId(row.get(3)),
        status: SessionStatus::parse(row.get(4)).ok_or_else(|| corrupt("session status"))?,
        created_at: row.get(5),
        started_at: row.get(6),
        ended_at: row.get(7),
    })
}

pub(super) fn poll_from_row(row: &Row, options: Vec<PollOption>) -> R<Poll> {
    let kind = match row.get::<_, &str>(4) {
        "multiple_choice" => PollKind::MultipleChoice {
            options,
            allow_multiple: row.get(5),
        },
        "rating_scale" => PollKind::RatingScale {
            min: row
                .get::<_, Option<i32>>(6)
                .ok_or_else(|| corrupt("rating bounds"))?,
            max: row
                .get::<_, Option<i32>>(7)
                .ok_or_else(|| corrupt("rating bounds"))?,
        },
        "open_text" => PollKind::OpenText,
        _ => return Err(corrupt("poll type")),
    };
    Ok(Poll {
        id: PollId(row.get(0)),
        session_id: SessionId(row.get(1)),
        question: row.get(2),
        is_anonymous: row.get(3),
        kind,
        sequence_order: row.get(8),
        status: PollStatus::parse(row.get(9)).ok_or_else(|| corrupt("poll status"))?,
        created_at: row.get(10),
        activated_at: row.get(11),
        closed_at: row.get(12),
        vote_count: row.get(13),
    })
}

pub(super) fn participant_from_row(row: &Row) -> Participant {
    Participant {
        id: ParticipantId(row.get(0)),
        session_id: SessionId(row.get(1)),
        display_name: row.get(2),
        joined_at: row.get(3),
        present: row.get(4),
    }
}

/// Reads back a stored choice (written by `Choice::to_json`).
pub(super) fn choice_from_json(value: &Value) -> R<Choice> {
    if let Some(ids) = value.get("selectedOptionIds").and_then(Value::as_array) {
        let ids = ids
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(|s| OptionId::parse(s).ok())
                    .ok_or_else(|| corrupt("choice"))
            })
            .collect::<R<Vec<_>>>()?;
        return Ok(Choice::Options(ids));
    }
    if let Some(value) = value.get("ratingValue").and_then(Value::as_i64) {
        return Ok(Choice::Rating(value as i32));
    }
    if let Some(text) = value.get("textResponse").and_then(Value::as_str) {
        return Ok(Choice::Text(text.to_string()));
    }
    Err(corrupt("choice"))
}

#[async_trait]
impl PollingTx for PgTx<'_> {
    async fn head_event_id(&mut self) -> R<EventId> {
        // Never below what retention dropped: a client streaming from this
        // id must not be told it is too old.
        let rows = self
            .query(
                "SELECT greatest(coalesce(max(id), 0), (SELECT pruned_through FROM log_state)) FROM events",
                &[],
            )
            .await?;
        Ok(rows[0].get(0))
    }

    async fn session(&mut self, id: SessionId) -> R<Option<Session>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1");
        self.query(&sql, &[&id.0])
            .await?
            .first()
            .map(session_from_row)
            .transpose()
    }

    async fn session_by_slug(&mut self, slug: &str) -> R<Option<Session>> {
        let sql = format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE slug = $1");
        self.query(&sql, &[&slug])
            .await?
            .first()
            .map(session_from_row)
            .transpose()
    }

    async fn insert_session(&mut self, s: &Session) -> R<()> {
        self.execute(
            "INSERT INTO sessions (id, slug, title, presenter_id, status, created_at, started_at, ended_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &s.id.0,
                &s.slug,
                &s.title,
                &s.presenter_id.0,
                &s.status.as_str(),
                &s.created_at,
                &s.started_at,
                &s.ended_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn update_session(&mut self, s: &Session) -> R<()> {
        self.execute(
            "UPDATE sessions SET status = $2, started_at = $3, ended_at = $4 WHERE id = $1",
            &[&s.id.0, &s.status.as_str(), &s.started_at, &s.ended_at],
        )
        .await?;
        Ok(())
    }

    async fn poll(&mut self, id: PollId) -> R<Option<Poll>> {
        Ok(self.polls_where("id = $1", &id.0).await?.pop())
    }

    async fn polls_of(&mut self, session: SessionId) -> R<Vec<Poll>> {
        self.polls_where("session_id = $1", &session.0).await
    }

    async fn open_poll(&mut self, session: SessionId) -> R<Option<Poll>> {
        Ok(self
            .polls_where("session_id = $1 AND status = 'open'", &session.0)
            .await?
            .pop())
    }

    async fn poll_count(&mut self, session: SessionId) -> R<i64> {
        let rows = self
            .query("SELECT count(*) FROM polls WHERE session_id = $1", &[&session.0])
            .await?;
        Ok(rows[0].get(0))
    }

    async fn insert_poll(&mut self, p: &Poll) -> R<()> {
        let (allow_multiple, min, max) = match &p.kind {
            PollKind::MultipleChoice { allow_multiple, .. } => (*allow_multiple, None, None),
            PollKind::RatingScale { min, max } => (false, Some(*min), Some(*max)),
            PollKind::OpenText => (false, None, None),
        };
        self.execute(
            "INSERT INTO polls (id, session_id, question, poll_type, allow_multiple, is_anonymous, min_rating,
                                max_rating, sequence_order, status, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &p.id.0,
                &p.session_id.0,
                &p.question,
                &p.kind.type_name(),
                &allow_multiple,
                &p.is_anonymous,
                &min,
                &max,
                &p.sequence_order,
                &p.status.as_str(),
                &p.created_at,
            ],
        )
        .await?;
        if let PollKind::MultipleChoice { options, .. } = &p.kind {
            let ids: Vec<Uuid> = options.iter().map(|o| o.id.0).collect();
            let texts: Vec<&str> = options.iter().map(|o| o.text.as_str()).collect();
            let orders: Vec<i32> = options.iter().map(|o| o.sequence_order).collect();
            self.execute(
                "INSERT INTO poll_options (poll_id, id, option_text, sequence_order)
                 SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::int[])",
                &[&p.id.0, &ids, &texts, &orders],
            )
            .await?;
        }
        Ok(())
    }

    async fn update_poll(&mut self, p: &Poll) -> R<()> {
        self.execute(
            "UPDATE polls SET status = $2, activated_at = $3, closed_at = $4 WHERE id = $1",
            &[&p.id.0, &p.status.as_str(), &p.activated_at, &p.closed_at],
        )
        .await?;
        Ok(())
    }

    async fn participant(&mut self, id: ParticipantId) -> R<Option<Participant>> {
        let rows = self
            .query(
                "SELECT id, session_id, display_name, joined_at, present FROM participants WHERE id = $1",
                &[&id.0],
            )
            .await?;
        Ok(rows.first().map(participant_from_row))
    }

    async fn insert_participant(&mut self, p: &Participant) -> R<()> {
        self.execute(
            "WITH inserted AS (
                 INSERT INTO participants (id, session_id, display_name, joined_at, present)
                 VALUES ($1, $2, $3, $4, $5) RETURNING session_id, present
             )
             UPDATE sessions SET present_count = present_count + 1
              WHERE id IN (SELECT session_id FROM inserted WHERE present)",
            &[
                &p.id.0,
                &p.session_id.0,
                &p.display_name,
                &p.joined_at,
                &p.present,
            ],
        )
        .await?;
        Ok(())
    }

    async fn insert_participants(&mut self, participants: &[Participant]) -> R<()> {
        if participants.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = participants.iter().map(|p| p.id.0).collect();
        let sessions: Vec<Uuid> = participants.iter().map(|p| p.session_id.0).collect();
        let names: Vec<Option<&str>> = participants.iter().map(|p| p.display_name.as_deref()).collect();
        let joined_at: Vec<DateTime<Utc>> = participants.iter().map(|p| p.joined_at).collect();
        let present: Vec<bool> = participants.iter().map(|p| p.present).collect();
        self.execute(
            "WITH inserted AS (
                 INSERT INTO participants (id, session_id, display_name, joined_at, present)
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::bool[])
                 RETURNING session_id, present
             )
             UPDATE sessions SET present_count = present_count + c.n
               FROM (SELECT session_id, count(*) AS n FROM inserted WHERE present GROUP BY session_id) AS c
              WHERE sessions.id = c.session_id",
            &[&ids, &sessions, &names, &joined_at, &present],
        )
        .await?;
        Ok(())
    }

    async fn set_present(&mut self, id: ParticipantId, present: bool) -> R<()> {
        // Only a real change moves the session's count.
        self.execute(
            "WITH changed AS (
                 UPDATE participants SET present = $2 WHERE id = $1 AND present <> $2 RETURNING session_id
             )
             UPDATE sessions SET present_count = present_count + CASE WHEN $2 THEN 1 ELSE -1 END
              WHERE id IN (SELECT session_id FROM changed)",
            &[&id.0, &present],
        )
        .await?;
        Ok(())
    }

    async fn present_count(&mut self, session: SessionId) -> R<i64> {
        let rows = self
            .query("SELECT present_count FROM sessions WHERE id = $1", &[&session.0])
            .await?;
        Ok(rows.first().map_or(0, |r| r.get(0)))
    }

    async fn voters(&mut self, ballots: &[(ParticipantId, PollId)]) -> R<Voters> {
        self.read_voters(ballots).await
    }

    async fn record_votes(&mut self, votes: &[Vote]) -> R<Vec<bool>> {
        self.insert_votes(votes).await
    }

    async fn tally(&mut self, poll: &Poll, text_limit: usize) -> R<Tally> {
        self.read_tally(poll, text_limit).await
    }

    async fn ballot_reads(
        &mut self,
        polls: &[PollId],
        ballots: &[(ParticipantId, PollId)],
    ) -> R<BallotReads> {
        self.read_ballot_inputs(polls, ballots).await
    }

    async fn record_votes_and_tally(
        &mut self,
        votes: &[Vote],
        polls: &[&Poll],
        text_limit: usize,
    ) -> R<(Vec<bool>, Vec<Tally>)> {
        self.insert_votes_and_tally(votes, polls, text_limit).await
    }

    async fn latest_vote(&mut self, poll: PollId) -> R<Option<(String, DateTime<Utc>)>> {
        let rows = self
            .query(
                "SELECT id, submitted_at FROM votes WHERE poll_id = $1 ORDER BY submitted_at DESC, id DESC LIMIT 1",
                &[&poll.0],
            )
            .await?;
        Ok(rows.first().map(|r| (VoteId(r.get(0)).to_string(), r.get(1))))
    }

    async fn votes_of(&mut self, poll: PollId) -> R<Vec<VoteRecord>> {
        let rows = self
            .query(
                "SELECT v.id, v.participant_id, v.choice, v.submitted_at, v.client_submitted_at, p.display_name
                   FROM votes v JOIN participants p ON p.id = v.participant_id
                  WHERE v.poll_id = $1 ORDER BY v.submitted_at, v.id",
                &[&poll.0],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(VoteRecord {
                    vote: Vote {
                        id: VoteId(r.get(0)),
                        poll_id: poll,
                        participant_id: ParticipantId(r.get(1)),
                        choice: choice_from_json(&r.get::<_, Value>(2))?,
                        submitted_at: r.get(3),
                        client_submitted_at: r.get(4),
                    },
                    display_name: r.get(5),
                })
            })
            .collect()
    }

    async fn open_connection(&mut self, c: &PresenceConnection) -> R<()> {
        self.execute(
            "INSERT INTO presence_connections (id, node_id, session_id, participant_id, opened_at, last_seen)
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING",
            &[
                &c.id,
                &c.node_id,
                &c.session_id.0,
                &c.participant_id.0,
                &c.opened_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn close_connection(&mut self, id: Uuid) -> R<()> {
        self.execute("DELETE FROM presence_connections WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    async fn connection_count(&mut self, participant: ParticipantId) -> R<i64> {
        let rows = self
            .query(
                "SELECT count(*) FROM presence_connections WHERE participant_id = $1",
                &[&participant.0],
            )
            .await?;
        Ok(rows[0].get(0))
    }

    async fn touch_connections(&mut self, node_id: Uuid, now: DateTime<Utc>) -> R<()> {
        self.execute(
            "UPDATE presence_connections SET last_seen = $2 WHERE node_id = $1",
            &[&node_id, &now],
        )
        .await?;
        Ok(())
    }

    async fn expire_connections(&mut self, before: DateTime<Utc>) -> R<Vec<ParticipantId>> {
        let rows = self
            .query(
                "DELETE FROM presence_connections WHERE last_seen < $1 RETURNING participant_id",
                &[&before],
            )
            .await?;
        let mut participants: Vec<ParticipantId> = rows.iter().map(|r| ParticipantId(r.get(0))).collect();
        participants.sort();
        participants.dedup();
        Ok(participants)
    }

    async fn live_nodes(&mut self, node_id: Uuid, now: DateTime<Utc>, before: DateTime<Utc>) -> R<usize> {
        self.execute(
            "INSERT INTO nodes (node_id, last_seen) VALUES ($1, $2)
             ON CONFLICT (node_id) DO UPDATE SET last_seen = excluded.last_seen",
            &[&node_id, &now],
        )
        .await?;
        self.execute("DELETE FROM nodes WHERE last_seen < $1", &[&before])
            .await?;
        let rows = self.query("SELECT count(*) FROM nodes", &[]).await?;
        Ok(rows[0].get::<_, i64>(0).max(1) as usize)
    }

    async fn entity_version(&mut self, topic: &str, entity_id: &str) -> R<i64> {
        let rows = self
            .query(
                "SELECT version FROM entity_versions WHERE topic = $1 AND entity_id = $2",
                &[&topic, &entity_id],
            )
            .await?;
        Ok(rows.first().map_or(0, |row| row.get(0)))
    }

    async fn set_entity_version(&mut self, topic: &str, entity_id: &str, version: i64) -> R<()> {
        self.execute(
            "INSERT INTO entity_versions (topic, entity_id, version) VALUES ($1, $2, $3)
             ON CONFLICT (topic, entity_id) DO UPDATE SET version = excluded.version",
            &[&topic, &entity_id, &version],
        )
        .await?;
        Ok(())
    }
}
