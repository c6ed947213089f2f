-- Retention looked for the newest event older than the cutoff with the
-- generic plan every pooled connection is set to (plan_cache_mode =
-- force_generic_plan, see src/store/postgres.rs): without the cutoff's
-- value, that plan walks the primary key backwards over the whole log.
-- On a 10-million-event log it took 2.3 s, at every start and every
-- minute; planned for the actual cutoff it uses the created_at index and
-- takes 3 ms (bench/reconnect_backlog.py, BENCHMARKS.md). The function
-- now plans its statements for the values it is given, whatever the
-- session's setting.
ALTER FUNCTION prune_events(timestamptz) SET plan_cache_mode = force_custom_plan;
