-- Votes keep their poll and participant ids without foreign keys. Each
-- key cost every vote two trigger lookups and a row lock on its
-- participant (a WAL record and a dirtied page per vote): about 10 % of
-- vote ingest, measured side by side. They guarded nothing the writer
-- does not already check: votes are inserted only by the writer, in the
-- transaction that has just read the poll and the participant under the
-- log lock, and polls and participants are never deleted. Anything that
-- deletes them later must delete their votes first.
ALTER TABLE votes
    DROP CONSTRAINT votes_poll_id_fkey,
    DROP CONSTRAINT votes_participant_id_fkey;
