//! The vote path on Postgres: what a vote batch reads, the one statement
//! that records its votes with their counters, and the tallies after it.
//!
//! The writer decides votes one batch at a time under the log lock, so
//! each round trip of a batch delays every vote behind it. The statements
//! here are therefore sent pipelined: the batch's reads go out together,
//! and so do its write and the tallies that follow it. Postgres runs
//! pipelined statements one after the other in the transaction, each with
//! a snapshot that sees the ones before, so a tally sent behind the write
//! counts the batch's votes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use serde_json::Value;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;
use uuid::Uuid;

use async_trait::async_trait;

use super::super::error::during;
use super::rows::{
    choice_from_json, options_by_poll, participant_from_row, poll_from_row, session_from_row, OPTIONS_OF,
    POLL_COLUMNS, SESSION_COLUMNS,
};
use super::PgTx;
use crate::domain::polling::ids::{OptionId, ParticipantId, PollId, VoteId};
use crate::domain::polling::model::{answer_key, Choice, Poll, PollKind, Tally, TextGroup, Vote};
use crate::store::error::StoreError;
use crate::store::tx::{BallotReads, VoteRecord, VoteRepo, Voters};

type R<T> = Result<T, StoreError>;

/// Records a batch's votes and bumps the counters of those recorded, in one
/// statement. The unique constraint, through ON CONFLICT, refuses a
/// participant's second vote on a poll; the counters are bumped from what
/// the INSERT returned, so a refused vote counts nowhere. Data-modifying
/// WITH clauses run whether or not the final SELECT reads them.
const RECORD_VOTES: &str = "WITH recorded AS (
         INSERT INTO votes (id, poll_id, participant_id, choice, submitted_at, client_submitted_at)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::jsonb[], $5::timestamptz[],
                              $6::timestamptz[])
         ON CONFLICT ON CONSTRAINT votes_one_per_participant DO NOTHING
         RETURNING id, poll_id),
     polls_bumped AS (
         UPDATE polls SET vote_count = polls.vote_count + c.n
           FROM (SELECT poll_id, count(*) AS n FROM recorded GROUP BY poll_id) AS c
          WHERE polls.id = c.poll_id),
     options_bumped AS (
         UPDATE poll_options SET vote_count = poll_options.vote_count + c.n
           FROM (SELECT s.option_id, count(*) AS n
                   FROM unnest($7::uuid[], $8::uuid[]) AS s(vote_id, option_id)
                   JOIN recorded r ON r.id = s.vote_id
                  GROUP BY s.option_id) AS c
          WHERE poll_options.id = c.option_id),
     ratings_bumped AS (
         INSERT INTO poll_rating_counts (poll_id, rating, vote_count)
         SELECT r.poll_id, s.rating, count(*)
           FROM unnest($9::uuid[], $10::int[]) AS s(vote_id, rating)
           JOIN recorded r ON r.id = s.vote_id
          GROUP BY r.poll_id, s.rating
         ON CONFLICT (poll_id, rating)
         DO UPDATE SET vote_count = poll_rating_counts.vote_count + EXCLUDED.vote_count),
     texts_bumped AS (
         INSERT INTO poll_text_groups (poll_id, answer_key, first_answer, first_at, vote_count)
         SELECT r.poll_id, s.answer_key, (array_agg(s.answer ORDER BY s.at, s.vote_id))[1], min(s.at), count(*)
           FROM unnest($11::uuid[], $12::text[], $13::text[], $14::timestamptz[])
                AS s(vote_id, answer_key, answer, at)
           JOIN recorded r ON r.id = s.vote_id
          GROUP BY r.poll_id, s.answer_key
         ON CONFLICT (poll_id, answer_key)
         DO UPDATE SET vote_count = poll_text_groups.vote_count + EXCLUDED.vote_count)
     SELECT id FROM recorded";

/// For each `(participant, poll)`: the participant and whether it already
/// voted on the poll.
const VOTERS: &str = "SELECT p.id, p.session_id, p.display_name, p.joined_at, p.present, w.poll_id,
            EXISTS (SELECT 1 FROM votes v WHERE v.poll_id = w.poll_id AND v.participant_id = w.id)
       FROM unnest($1::uuid[], $2::uuid[]) AS w(id, poll_id) JOIN participants p ON p.id = w.id";

/// The polls named, and their sessions: built once, not per batch.
static POLLS_BY_ID: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {POLL_COLUMNS} FROM polls WHERE id = ANY($1)"));
static SESSIONS_OF_POLLS: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id IN (SELECT session_id FROM polls WHERE id = ANY($1))")
});

/// A multiple-choice poll's count with its options' counts.
const CHOICE_TALLY: &str = "SELECT p.vote_count, o.id, o.vote_count FROM polls p
       JOIN poll_options o ON o.poll_id = p.id
      WHERE p.id = $1 ORDER BY o.sequence_order";
/// A rating poll's count with its ratings' counts (the count repeats on
/// each row; no row when nobody rated yet).
const RATING_TALLY: &str = "SELECT p.vote_count, r.rating, r.vote_count FROM polls p
       LEFT JOIN poll_rating_counts r ON r.poll_id = p.id
      WHERE p.id = $1";
/// The count, the newest answers, and the largest groups of answers
/// (`poll_text_groups`, kept by [`RECORD_VOTES`]), the most frequent
/// first. Answers the presenter hid (`hidden_answers`) are in neither: the
/// newest answers are read back from the end of the poll's votes until
/// enough are shown, each compared by the same key in SQL. (The hidden
/// keys as an array, not a join: a join made the planner sort every vote
/// of the poll instead of reading the newest from the index.)
const TEXT_TALLY: &str = "WITH top AS (
         SELECT g.first_answer, g.vote_count, g.first_at
           FROM poll_text_groups g
          WHERE g.poll_id = $1
            AND NOT EXISTS (SELECT 1 FROM hidden_answers h
                             WHERE h.poll_id = $1 AND h.answer_key = g.answer_key)
          ORDER BY g.vote_count DESC, g.first_at LIMIT $2)
     SELECT (SELECT vote_count FROM polls WHERE id = $1),
            ARRAY(SELECT choice->>'textResponse' FROM votes
                   WHERE poll_id = $1
                     AND lower(regexp_replace(choice->>'textResponse', '\\s+', ' ', 'g'))
                         <> ALL (ARRAY(SELECT answer_key FROM hidden_answers WHERE poll_id = $1))
                   ORDER BY submitted_at DESC, id DESC LIMIT $2),
            ARRAY(SELECT first_answer FROM top ORDER BY vote_count DESC, first_at),
            ARRAY(SELECT vote_count FROM top ORDER BY vote_count DESC, first_at)";

fn tally_statement(poll: &Poll) -> &'static str {
    match poll.kind {
        PollKind::MultipleChoice { .. } => CHOICE_TALLY,
        PollKind::RatingScale { .. } => RATING_TALLY,
        PollKind::OpenText => TEXT_TALLY,
    }
}

impl PgTx<'_> {
    /// Prepares (or finds in the connection's cache) every statement a
    /// pipelined flight will send. Once they are cached, sending one does
    /// not wait for anything, so a flight's statements go out in the order
    /// their futures are first polled.
    async fn prepare_all(&self, statements: &[&str]) -> R<()> {
        let prepared = statements.iter().map(|sql| self.tx.prepare_cached(sql));
        try_join_all(prepared).await.map_err(during("prepare all"))?;
        Ok(())
    }

    /// The polls, their options and sessions, and the voters, in one
    /// round trip.
    async fn read_ballot_inputs(
        &self,
        polls: &[PollId],
        ballots: &[(ParticipantId, PollId)],
    ) -> R<BallotReads> {
        self.prepare_all(&[&POLLS_BY_ID, OPTIONS_OF, &SESSIONS_OF_POLLS])
            .await?;
        let ids: Vec<Uuid> = polls.iter().map(|p| p.0).collect();
        let by_ids: [&(dyn ToSql + Sync); 1] = [&ids];
        let (poll_rows, option_rows, session_rows, voters) = futures::try_join!(
            self.query(&POLLS_BY_ID, &by_ids),
            self.query(OPTIONS_OF, &by_ids),
            self.query(&SESSIONS_OF_POLLS, &by_ids),
            self.read_voters(ballots),
        )?;
        let mut options = options_by_poll(option_rows);
        let mut sessions = HashMap::new();
        for row in &session_rows {
            let session = session_from_row(row)?;
            sessions.insert(session.id, session);
        }
        let mut found = HashMap::new();
        for row in &poll_rows {
            let poll = poll_from_row(row, options.remove(&row.get::<_, Uuid>(0)).unwrap_or_default())?;
            if let Some(session) = sessions.get(&poll.session_id) {
                found.insert(poll.id, (session.clone(), poll));
            }
        }
        Ok(BallotReads { polls: found, voters })
    }

    async fn read_voters(&self, ballots: &[(ParticipantId, PollId)]) -> R<Voters> {
        let participants: Vec<Uuid> = ballots.iter().map(|(p, _)| p.0).collect();
        let polls: Vec<Uuid> = ballots.iter().map(|(_, p)| p.0).collect();
        // Sent unnamed (parse, bind and execute in one message), so it is
        // planned on every call with the tables as they are. Pooled
        // statements keep the generic plan made on their first run, and a
        // connection's first vote batch usually meets an empty votes
        // table: that plan looked votes up by a hashed scan of the whole
        // table, which grew with every vote (5 ms per batch at 20,000).
        let rows = self
            .tx
            .query_typed(
                VOTERS,
                &[(&participants, Type::UUID_ARRAY), (&polls, Type::UUID_ARRAY)],
            )
            .await
            .map_err(during("read voters"))?;
        let mut voters = Voters::default();
        for row in &rows {
            let participant = participant_from_row(row);
            if row.get::<_, bool>(6) {
                voters.voted.insert((PollId(row.get(5)), participant.id));
            }
            voters.participants.insert(participant.id, participant);
        }
        Ok(voters)
    }

    /// For each vote, whether it was recorded.
    async fn insert_votes(&self, votes: &[Vote]) -> R<Vec<bool>> {
        self.insert_votes_and_tally(votes, &[], 0)
            .await
            .map(|(recorded, _)| recorded)
    }

    /// Records the votes and reads the polls' tallies after them, in one
    /// round trip (see the module header for why the tallies see the votes).
    async fn insert_votes_and_tally(
        &self,
        votes: &[Vote],
        polls: &[&Poll],
        text_limit: usize,
    ) -> R<(Vec<bool>, Vec<Tally>)> {
        let mut statements = vec![RECORD_VOTES];
        statements.extend(polls.iter().map(|poll| tally_statement(poll)));
        self.prepare_all(&statements).await?;
        let columns = VoteColumns::of(votes);
        let text_limit = text_limit as i64;
        let tallies = polls.iter().map(|poll| self.read_tally_rows(poll, text_limit));
        let (inserted, tallies) = futures::try_join!(self.record(&columns), try_join_all(tallies))?;
        let tallies = polls
            .iter()
            .zip(tallies)
            .map(|(poll, rows)| tally_from_rows(poll, &rows))
            .collect();
        let recorded = votes.iter().map(|v| inserted.contains(&v.id.0)).collect();
        Ok((recorded, tallies))
    }

    /// The ids of the votes the INSERT took. Nothing to send for none.
    async fn record(&self, columns: &VoteColumns) -> R<HashSet<Uuid>> {
        if columns.ids.is_empty() {
            return Ok(HashSet::new());
        }
        let params: [&(dyn ToSql + Sync); 14] = [
            &columns.ids,
            &columns.polls,
            &columns.participants,
            &columns.choices,
            &columns.times,
            &columns.client_times,
            &columns.option_votes,
            &columns.options,
            &columns.rating_votes,
            &columns.ratings,
            &columns.text_votes,
            &columns.text_keys,
            &columns.text_answers,
            &columns.text_times,
        ];
        let rows = self.query(RECORD_VOTES, &params).await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn read_tally(&self, poll: &Poll, text_limit: usize) -> R<Tally> {
        let rows = self.read_tally_rows(poll, text_limit as i64).await?;
        Ok(tally_from_rows(poll, &rows))
    }

    async fn read_tally_rows(&self, poll: &Poll, text_limit: i64) -> R<Vec<Row>> {
        match poll.kind {
            PollKind::OpenText => self.query(TEXT_TALLY, &[&poll.id.0, &text_limit]).await,
            _ => self.query(tally_statement(poll), &[&poll.id.0]).await,
        }
    }
}

/// A batch's votes as the parallel arrays [`RECORD_VOTES`] takes: one
/// entry per vote, then one per chosen option, per rating and per text
/// answer.
struct VoteColumns {
    ids: Vec<Uuid>,
    polls: Vec<Uuid>,
    participants: Vec<Uuid>,
    choices: Vec<Value>,
    times: Vec<DateTime<Utc>>,
    client_times: Vec<Option<DateTime<Utc>>>,
    option_votes: Vec<Uuid>,
    options: Vec<Uuid>,
    rating_votes: Vec<Uuid>,
    ratings: Vec<i32>,
    /// Open-text answers with their `answer_key`, for `poll_text_groups`.
    text_votes: Vec<Uuid>,
    text_keys: Vec<String>,
    text_answers: Vec<String>,
    text_times: Vec<DateTime<Utc>>,
}

impl VoteColumns {
    fn of(votes: &[Vote]) -> Self {
        let mut columns = VoteColumns {
            ids: Vec::with_capacity(votes.len()),
            polls: Vec::with_capacity(votes.len()),
            participants: Vec::with_capacity(votes.len()),
            choices: Vec::with_capacity(votes.len()),
            times: Vec::with_capacity(votes.len()),
            client_times: Vec::with_capacity(votes.len()),
            option_votes: Vec::new(),
            options: Vec::new(),
            rating_votes: Vec::new(),
            ratings: Vec::new(),
            text_votes: Vec::new(),
            text_keys: Vec::new(),
            text_answers: Vec::new(),
            text_times: Vec::new(),
        };
        for vote in votes {
            columns.ids.push(vote.id.0);
            columns.polls.push(vote.poll_id.0);
            columns.participants.push(vote.participant_id.0);
            columns.choices.push(vote.choice.to_json());
            columns.times.push(vote.submitted_at);
            columns.client_times.push(vote.client_submitted_at);
            match &vote.choice {
                Choice::Options(ids) => {
                    for option in ids {
                        columns.option_votes.push(vote.id.0);
                        columns.options.push(option.0);
                    }
                }
                Choice::Rating(value) => {
                    columns.rating_votes.push(vote.id.0);
                    columns.ratings.push(*value);
                }
                Choice::Text(answer) => {
                    columns.text_votes.push(vote.id.0);
                    columns.text_keys.push(answer_key(answer));
                    columns.text_answers.push(answer.clone());
                    columns.text_times.push(vote.submitted_at);
                }
            }
        }
        columns
    }
}

fn tally_from_rows(poll: &Poll, rows: &[Row]) -> Tally {
    let vote_count = rows.first().and_then(|r| r.get::<_, Option<i64>>(0)).unwrap_or(0);
    match &poll.kind {
        PollKind::MultipleChoice { .. } => Tally {
            vote_count,
            option_counts: rows.iter().map(|r| (OptionId(r.get(1)), r.get(2))).collect(),
            ..Tally::default()
        },
        PollKind::RatingScale { min, max } => {
            let mut rating_counts: BTreeMap<i32, i64> = (*min..=*max).map(|v| (v, 0)).collect();
            for row in rows {
                if let (Some(rating), Some(count)) =
                    (row.get::<_, Option<i32>>(1), row.get::<_, Option<i64>>(2))
                {
                    rating_counts.insert(rating, count);
                }
            }
            Tally {
                vote_count,
                rating_counts,
                ..Tally::default()
            }
        }
        PollKind::OpenText => {
            let newest_first: Vec<Option<String>> = rows.first().map(|r| r.get(1)).unwrap_or_default();
            let texts: Vec<Option<String>> = rows.first().and_then(|r| r.get(2)).unwrap_or_default();
            let counts: Vec<i64> = rows.first().and_then(|r| r.get(3)).unwrap_or_default();
            Tally {
                vote_count,
                texts: newest_first.into_iter().rev().flatten().collect(),
                text_groups: texts
                    .into_iter()
                    .zip(counts)
                    .filter_map(|(text, count)| Some(TextGroup { text: text?, count }))
                    .collect(),
                ..Tally::default()
            }
        }
    }
}

#[async_trait]
impl VoteRepo for PgTx<'_> {
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

    async fn votes_by(&mut self, participant: ParticipantId, polls: &[PollId]) -> R<Vec<Vote>> {
        let ids: Vec<Uuid> = polls.iter().map(|p| p.0).collect();
        // By (poll, participant): the one-vote constraint's index answers.
        let rows = self
            .query(
                "SELECT id, poll_id, choice, submitted_at, client_submitted_at
                   FROM votes WHERE poll_id = ANY($1) AND participant_id = $2",
                &[&ids, &participant.0],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Vote {
                    id: VoteId(r.get(0)),
                    poll_id: PollId(r.get(1)),
                    participant_id: participant,
                    choice: choice_from_json(&r.get::<_, Value>(2))?,
                    submitted_at: r.get(3),
                    client_submitted_at: r.get(4),
                })
            })
            .collect()
    }
}
