//! Schema migrations: the numbered files in `sql/`, compiled into the
//! binary and applied in order at start, once per database, under a lock so
//! that nodes starting together do not race.

use tokio_postgres::Client;

/// Every migration, in order. A file is never edited once released: changes
/// come as a new file.
const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_events", include_str!("../../../sql/0001_events.sql")),
    ("0002_polling", include_str!("../../../sql/0002_polling.sql")),
    ("0003_nodes", include_str!("../../../sql/0003_nodes.sql")),
    (
        "0004_entity_versions",
        include_str!("../../../sql/0004_entity_versions.sql"),
    ),
    (
        "0005_votes_without_foreign_keys",
        include_str!("../../../sql/0005_votes_without_foreign_keys.sql"),
    ),
    (
        "0006_revocations",
        include_str!("../../../sql/0006_revocations.sql"),
    ),
    (
        "0007_prune_with_custom_plans",
        include_str!("../../../sql/0007_prune_with_custom_plans.sql"),
    ),
    (
        "0008_idempotency_answers",
        include_str!("../../../sql/0008_idempotency_answers.sql"),
    ),
    (
        "0009_poll_visibility_and_timers",
        include_str!("../../../sql/0009_poll_visibility_and_timers.sql"),
    ),
    (
        "0010_hidden_answers",
        include_str!("../../../sql/0010_hidden_answers.sql"),
    ),
    (
        "0011_publish_from_sql",
        include_str!("../../../sql/0011_publish_from_sql.sql"),
    ),
    ("0012_webhooks", include_str!("../../../sql/0012_webhooks.sql")),
    (
        "0013_webhook_previous_secret",
        include_str!("../../../sql/0013_webhook_previous_secret.sql"),
    ),
    (
        "0014_publish_with_entity",
        include_str!("../../../sql/0014_publish_with_entity.sql"),
    ),
];

/// Advisory lock key held while migrating ("pollmigr" in ASCII).
const MIGRATION_LOCK: i64 = 0x706f_6c6c_6d69_6772;

pub async fn apply(client: &mut Client) -> Result<Vec<&'static str>, tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let result = apply_locked(client).await;
    // Unlock even when a migration failed; the session ends soon anyway.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    result
}

async fn apply_locked(client: &mut Client) -> Result<Vec<&'static str>, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    text PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let done = client
            .query_opt("SELECT 1 FROM schema_migrations WHERE version = $1", &[version])
            .await?
            .is_some();
        if done {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version) VALUES ($1)", &[version])
            .await?;
        tx.commit().await?;
        applied.push(*version);
    }
    Ok(applied)
}
