//! Sessions and polls on Postgres.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::rows::{session_from_row, SESSION_COLUMNS};
use super::PgTx;
use crate::domain::polling::ids::{PollId, SessionId};
use crate::domain::polling::model::{answer_key, Poll, PollKind, Session};
use crate::store::error::StoreError;
use crate::store::tx::{PollRepo, SessionRepo};

type R<T> = Result<T, StoreError>;

#[async_trait]
impl SessionRepo for PgTx<'_> {
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
}

#[async_trait]
impl PollRepo for PgTx<'_> {
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
                                max_rating, sequence_order, status, created_at, results_visibility)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
                &p.results_visibility.as_str(),
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
            "UPDATE polls SET status = $2, activated_at = $3, closed_at = $4,
                              results_revealed_at = $5, closes_at = $6
              WHERE id = $1",
            &[
                &p.id.0,
                &p.status.as_str(),
                &p.activated_at,
                &p.closed_at,
                &p.results_revealed_at,
                &p.closes_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn timed_polls(&mut self) -> R<Vec<(PollId, DateTime<Utc>)>> {
        let rows = self
            .query(
                "SELECT id, closes_at FROM polls WHERE status = 'open' AND closes_at IS NOT NULL",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (PollId(r.get(0)), r.get(1))).collect())
    }

    async fn hide_answer(&mut self, poll: PollId, answer: &str, at: DateTime<Utc>) -> R<()> {
        self.execute(
            "INSERT INTO hidden_answers (poll_id, answer_key, answer, hidden_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
            &[&poll.0, &answer_key(answer), &answer, &at],
        )
        .await?;
        Ok(())
    }

    async fn answer_hidden(&mut self, poll: PollId, answer: &str) -> R<bool> {
        let rows = self
            .query(
                "SELECT 1 FROM hidden_answers WHERE poll_id = $1 AND answer_key = $2",
                &[&poll.0, &answer_key(answer)],
            )
            .await?;
        Ok(!rows.is_empty())
    }
}
