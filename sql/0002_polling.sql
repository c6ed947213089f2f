-- Live polling state. Every row here is written by the writer task in the
-- same transaction as the events that describe the change, under the log's
-- advisory lock, so state and events never disagree.

CREATE TABLE sessions (
    id           uuid        PRIMARY KEY,
    slug         text        NOT NULL UNIQUE,
    title        text        NOT NULL,
    presenter_id uuid        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('draft', 'active', 'ended')),
    created_at   timestamptz NOT NULL,
    started_at   timestamptz,
    ended_at     timestamptz,
    -- Participants present now: kept with every presence change, so a
    -- count costs one row, not a scan of the session's participants.
    present_count bigint     NOT NULL DEFAULT 0
);

CREATE TABLE polls (
    id             uuid        PRIMARY KEY,
    session_id     uuid        NOT NULL REFERENCES sessions (id),
    question       text        NOT NULL,
    poll_type      text        NOT NULL CHECK (poll_type IN ('multiple_choice', 'rating_scale', 'open_text')),
    allow_multiple boolean     NOT NULL DEFAULT false,
    is_anonymous   boolean     NOT NULL,
    min_rating     integer,
    max_rating     integer,
    sequence_order integer     NOT NULL,
    status         text        NOT NULL CHECK (status IN ('draft', 'open', 'closed')),
    created_at     timestamptz NOT NULL,
    activated_at   timestamptz,
    closed_at      timestamptz,
    -- Counter kept in the vote's transaction.
    vote_count     bigint      NOT NULL DEFAULT 0
);
CREATE INDEX polls_session ON polls (session_id, sequence_order);
-- At most one open poll per session, whatever the application does.
CREATE UNIQUE INDEX polls_one_open_per_session ON polls (session_id) WHERE status = 'open';

CREATE TABLE poll_options (
    id             uuid    PRIMARY KEY,
    poll_id        uuid    NOT NULL REFERENCES polls (id),
    option_text    text    NOT NULL,
    sequence_order integer NOT NULL,
    vote_count     bigint  NOT NULL DEFAULT 0
);
CREATE INDEX poll_options_poll ON poll_options (poll_id, sequence_order);

CREATE TABLE poll_rating_counts (
    poll_id    uuid    NOT NULL REFERENCES polls (id),
    rating     integer NOT NULL,
    vote_count bigint  NOT NULL DEFAULT 0,
    PRIMARY KEY (poll_id, rating)
);

CREATE TABLE participants (
    id           uuid        PRIMARY KEY,
    session_id   uuid        NOT NULL REFERENCES sessions (id),
    display_name text,
    joined_at    timestamptz NOT NULL,
    -- Counted in participantCount (see CONTRACT §2, presence).
    present      boolean     NOT NULL DEFAULT true
);

CREATE TABLE votes (
    id                  uuid        PRIMARY KEY,
    poll_id             uuid        NOT NULL REFERENCES polls (id),
    participant_id      uuid        NOT NULL REFERENCES participants (id),
    choice              jsonb       NOT NULL,
    submitted_at        timestamptz NOT NULL,
    client_submitted_at timestamptz,
    -- One vote per participant per poll: the database enforces it.
    CONSTRAINT votes_one_per_participant UNIQUE (poll_id, participant_id)
);
CREATE INDEX votes_poll_time ON votes (poll_id, submitted_at);

-- Open participant streams, on every node: presence is global. A node
-- refreshes last_seen for its rows; rows of a node that stopped doing so
-- expire.
CREATE TABLE presence_connections (
    id             uuid        PRIMARY KEY,
    node_id        uuid        NOT NULL,
    session_id     uuid        NOT NULL,
    participant_id uuid        NOT NULL,
    opened_at      timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL
);
CREATE INDEX presence_connections_participant ON presence_connections (participant_id);
CREATE INDEX presence_connections_node ON presence_connections (node_id);
