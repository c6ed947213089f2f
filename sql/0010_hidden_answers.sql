-- Issue 18: open-text answers grouped and hidden.
--
-- poll_text_groups keeps, per poll and answer key (the answer lower-cased
-- with runs of whitespace made one space, computed by the server), how
-- many gave it and its first spelling, bumped in the vote's own statement
-- as poll_rating_counts is. Reading the groups is then one index range,
-- not a scan of every answer: with 10,000 answers, grouping them on each
-- read took 37 ms a read, this 0.3 ms-scale lookup (BENCHMARKS.md).
CREATE TABLE poll_text_groups (
    poll_id      uuid        NOT NULL,
    answer_key   text        NOT NULL,
    first_answer text        NOT NULL,
    first_at     timestamptz NOT NULL,
    vote_count   bigint      NOT NULL,
    PRIMARY KEY (poll_id, answer_key)
);

-- Answers given before this migration, grouped the same way.
INSERT INTO poll_text_groups (poll_id, answer_key, first_answer, first_at, vote_count)
SELECT poll_id, answer_key, (array_agg(answer ORDER BY submitted_at, id))[1], min(submitted_at), count(*)
  FROM (SELECT poll_id, id, submitted_at, choice->>'textResponse' AS answer,
               lower(regexp_replace(btrim(choice->>'textResponse'), '\s+', ' ', 'g')) AS answer_key
          FROM votes WHERE choice ? 'textResponse') AS texts
 GROUP BY poll_id, answer_key;

-- Answers the presenter hid, by the same key. Votes stay: only what the
-- results show changes.
CREATE TABLE hidden_answers (
    poll_id    uuid        NOT NULL,
    answer_key text        NOT NULL,
    answer     text        NOT NULL,
    hidden_at  timestamptz NOT NULL,
    PRIMARY KEY (poll_id, answer_key)
);
