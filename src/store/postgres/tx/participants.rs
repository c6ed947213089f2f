//! Participants on Postgres, with their sessions' present counts.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rows::participant_from_row;
use super::PgTx;
use crate::domain::polling::ids::{ParticipantId, SessionId};
use crate::domain::polling::model::Participant;
use crate::store::error::StoreError;
use crate::store::tx::ParticipantRepo;

type R<T> = Result<T, StoreError>;

#[async_trait]
impl ParticipantRepo for PgTx<'_> {
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
}
