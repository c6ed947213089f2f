-- Nodes sharing this database, each with its latest heartbeat. A node
-- learns from it how many nodes are alive, so per-node limits can add up
-- to the cluster-wide limit the configuration asks for.
CREATE TABLE nodes (
    node_id   uuid PRIMARY KEY,
    last_seen timestamptz NOT NULL
);
