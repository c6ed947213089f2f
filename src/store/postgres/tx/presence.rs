//! Presence rows, node heartbeats and topic entity versions on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PgTx;
use crate::domain::polling::ids::ParticipantId;
use crate::store::error::StoreError;
use crate::store::tx::{ConnectionRepo, EntityKey, PresenceConnection, VersionRepo};

type R<T> = Result<T, StoreError>;

#[async_trait]
impl ConnectionRepo for PgTx<'_> {
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

    async fn node_heartbeats(&mut self) -> R<Vec<(Uuid, DateTime<Utc>)>> {
        let rows = self
            .query("SELECT node_id, last_seen FROM nodes ORDER BY node_id", &[])
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[async_trait]
impl VersionRepo for PgTx<'_> {
    async fn entity_versions(&mut self, keys: &[EntityKey]) -> R<Vec<i64>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let (topics, entities): (Vec<&str>, Vec<&str>) =
            keys.iter().map(|(t, e)| (t.as_str(), e.as_str())).unzip();
        let rows = self
            .query(
                "SELECT coalesce(v.version, 0)
                   FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(topic, entity_id, n)
                   LEFT JOIN entity_versions v ON v.topic = k.topic AND v.entity_id = k.entity_id
                  ORDER BY k.n",
                &[&topics, &entities],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    async fn set_entity_versions(&mut self, versions: &[(EntityKey, i64)]) -> R<()> {
        if versions.is_empty() {
            return Ok(());
        }
        let topics: Vec<&str> = versions.iter().map(|((t, _), _)| t.as_str()).collect();
        let entities: Vec<&str> = versions.iter().map(|((_, e), _)| e.as_str()).collect();
        let numbers: Vec<i64> = versions.iter().map(|(_, v)| *v).collect();
        self.execute(
            "INSERT INTO entity_versions (topic, entity_id, version)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
             ON CONFLICT (topic, entity_id) DO UPDATE SET version = excluded.version",
            &[&topics, &entities, &numbers],
        )
        .await?;
        Ok(())
    }
}
