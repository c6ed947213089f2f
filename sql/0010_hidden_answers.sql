-- Issue 18: open-text answers the presenter hid. An answer is hidden with
-- every answer that differs from it only in case or runs of whitespace;
-- both sides are normalized when compared (lower(regexp_replace(…))), so
-- the text is kept as the presenter gave it. Votes stay: only what the
-- results show changes.
CREATE TABLE hidden_answers (
    poll_id   uuid        NOT NULL,
    answer    text        NOT NULL,
    hidden_at timestamptz NOT NULL,
    PRIMARY KEY (poll_id, answer)
);
