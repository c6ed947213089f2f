-- Issue 18: who sees a poll's results while it runs, when withheld results
-- became public, and when a timed poll closes by itself. Existing polls
-- keep what they had: results public from the start, no timer.
ALTER TABLE polls
    ADD COLUMN results_visibility  text        NOT NULL DEFAULT 'always'
        CHECK (results_visibility IN ('always', 'after_vote', 'after_close', 'manual')),
    ADD COLUMN results_revealed_at timestamptz,
    ADD COLUMN closes_at           timestamptz;

-- The timer sweep on every node reads only the open timed polls.
CREATE INDEX polls_timed ON polls (closes_at) WHERE status = 'open' AND closes_at IS NOT NULL;
