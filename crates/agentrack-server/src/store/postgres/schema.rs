//! The schema and its migrations.

use tokio_postgres::Client;

use super::db_error;
use crate::store::StoreError;

/// The schema, one migration per version (version = index + 1); the same tables as SQLite's.
const MIGRATIONS: &[&str] = &[
    // 1: events, materialised executions, tokens, metadata.
    "CREATE TABLE events (
        global_seq   BIGINT PRIMARY KEY,
        execution_id TEXT,
        seq          BIGINT,
        tenant       TEXT,
        user_id      TEXT,
        thread_id    TEXT,
        type         TEXT NOT NULL,
        timestamp_ms BIGINT NOT NULL,
        json         TEXT NOT NULL
    );
    CREATE INDEX events_by_execution ON events (execution_id, global_seq);
    CREATE INDEX events_by_tenant ON events (tenant, global_seq);
    CREATE TABLE executions (
        execution_id    TEXT PRIMARY KEY,
        tenant          TEXT NOT NULL,
        user_id         TEXT NOT NULL,
        thread_id       TEXT NOT NULL,
        agent_name      TEXT NOT NULL,
        state           TEXT NOT NULL,
        started_at_ms   BIGINT NOT NULL,
        completed_at_ms BIGINT,
        record          TEXT NOT NULL
    );
    CREATE INDEX executions_by_tenant_user ON executions (tenant, user_id, execution_id);
    CREATE INDEX executions_by_completion ON executions (completed_at_ms) WHERE completed_at_ms IS NOT NULL;
    CREATE TABLE tokens (
        token_hash    TEXT PRIMARY KEY,
        role          TEXT NOT NULL,
        tenant        TEXT NOT NULL,
        user_id       TEXT,
        label         TEXT,
        created_at_ms BIGINT NOT NULL
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value BIGINT NOT NULL
    );",
    // 2: as SQLite's: rows say how far into their log they go and where a replay onto them starts;
    // the log keeps no index but its key. Room on each page keeps row rewrites HOT.
    "ALTER TABLE executions ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN replay_from BIGINT NOT NULL DEFAULT 0;
    UPDATE executions SET seq = COALESCE((record::jsonb->>'seq')::bigint, 0),
        replay_from = (SELECT COALESCE(MAX(global_seq), 0) FROM events);
    DROP INDEX events_by_tenant;
    DROP INDEX events_by_execution;
    ALTER TABLE executions SET (fillfactor = 70);",
    // 3: shards, for several nodes on one store. Each shard has its owner's lease and fencing
    // number (range_id) and its own sequence numbering (events are keyed by shard and number;
    // `reserved` replaces meta's high_water per shard). The rows themselves are made at open,
    // once, for the shard count chosen then (see `create_shards`).
    "CREATE TABLE shards (
        shard_id       INT PRIMARY KEY,
        owner          TEXT,
        range_id       BIGINT NOT NULL DEFAULT 0,
        lease_until_ms BIGINT NOT NULL DEFAULT 0,
        reserved       BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE nodes (
        node_id    TEXT PRIMARY KEY,
        url        TEXT NOT NULL,
        started_ms BIGINT NOT NULL,
        seen_ms    BIGINT NOT NULL
    );
    CREATE TABLE shard_moves (
        at_ms     BIGINT NOT NULL,
        shard_id  INT NOT NULL,
        from_node TEXT,
        to_node   TEXT,
        reason    TEXT NOT NULL
    );
    CREATE INDEX shard_moves_by_time ON shard_moves (at_ms);
    ALTER TABLE events ADD COLUMN shard_id INT NOT NULL DEFAULT 0;
    ALTER TABLE events DROP CONSTRAINT events_pkey;
    ALTER TABLE events ADD PRIMARY KEY (shard_id, global_seq);
    ALTER TABLE executions ADD COLUMN shard_id INT NOT NULL DEFAULT 0;",
    // 4: the fencing number each event was written under: an audit of who wrote what (along a
    // shard's log the numbers never decrease), which the cluster tests check fencing with.
    "ALTER TABLE events ADD COLUMN range_id BIGINT NOT NULL DEFAULT 0;",
    // 5: as SQLite's 3: tokens get a public id, an optional expiry and a revocation time;
    // single-use event-stream tickets.
    "ALTER TABLE tokens ADD COLUMN token_id TEXT;
    ALTER TABLE tokens ADD COLUMN expires_at_ms BIGINT;
    ALTER TABLE tokens ADD COLUMN revoked_at_ms BIGINT;
    UPDATE tokens SET token_id = 'tok_' || substr(token_hash, 1, 16);
    CREATE UNIQUE INDEX tokens_by_id ON tokens (token_id);
    CREATE TABLE tickets (
        ticket_hash   TEXT PRIMARY KEY,
        token_hash    TEXT NOT NULL,
        expires_at_ms BIGINT NOT NULL
    );",
    // 6: idempotency keys, as SQLite's 4: shared by every node, so a retry finds the first answer
    // on any of them.
    "CREATE TABLE idempotency_keys (
        scope         TEXT NOT NULL,
        key           TEXT NOT NULL,
        fingerprint   TEXT NOT NULL,
        status        INT,
        body          TEXT,
        created_at_ms BIGINT NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_ms);",
    // 7: as SQLite's 5: the phase history out of the execution row, one row per change appended
    // once, and the row's `phase_count` of the changes it accounts for.
    "CREATE TABLE phases (
        execution_id TEXT NOT NULL,
        n            BIGINT NOT NULL,
        transition   TEXT NOT NULL,
        PRIMARY KEY (execution_id, n)
    );
    ALTER TABLE executions ADD COLUMN phase_count BIGINT NOT NULL DEFAULT 0;
    INSERT INTO phases (execution_id, n, transition)
        SELECT e.execution_id,
               COALESCE((e.record::jsonb->>'phase_history_dropped')::bigint, 0) + j.position - 1, j.value::text
        FROM executions AS e,
             jsonb_array_elements(e.record::jsonb->'phase_history') WITH ORDINALITY AS j(value, position);
    UPDATE executions SET
        phase_count = COALESCE((record::jsonb->>'phase_history_dropped')::bigint, 0)
            + COALESCE(jsonb_array_length(record::jsonb->'phase_history'), 0),
        record = jsonb_set(record::jsonb, '{phase_history}', '[]'::jsonb)::text;",
    // 8: as SQLite's 6: the row's `phase_history_dropped` says where the tail of the history it
    // holds starts; the rows 7 left hold none, every kept change being in `phases`.
    "UPDATE executions SET
        record = jsonb_set(record::jsonb, '{phase_history_dropped}', to_jsonb(phase_count))::text
    WHERE phase_count <> COALESCE((record::jsonb->>'phase_history_dropped')::bigint, 0);",
];

/// Any number; it only has to be the same for every agentrack server on one database.
const MIGRATION_LOCK: i64 = 0x6167_656e_7472_6b31;

/// Applies the migrations a store lacks and, on a store without shards, makes them: `shards` of
/// them on an empty store, one on a store that already holds data (it was made for one node).
/// Returns the store's shard count.
pub(super) async fn migrate(client: &mut Client, shards: u16) -> Result<u16, StoreError> {
    let tx = client.transaction().await.map_err(db_error)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db_error)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
        .await
        .map_err(db_error)?;
    let current: i64 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])
        .await
        .map_err(db_error)?
        .get(0);
    let supported = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (version, sql) in (1_i64..)
        .zip(MIGRATIONS.iter())
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.batch_execute(sql).await.map_err(db_error)?;
        tx.execute("DELETE FROM schema_version", &[]).await.map_err(db_error)?;
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&version])
            .await
            .map_err(db_error)?;
        tracing::info!(version, "applied store migration");
    }
    let count = create_shards(&tx, shards).await?;
    tx.commit().await.map_err(db_error)?;
    Ok(count)
}

async fn create_shards(tx: &tokio_postgres::Transaction<'_>, wanted: u16) -> Result<u16, StoreError> {
    let existing: i64 = tx
        .query_one("SELECT COUNT(*) FROM shards", &[])
        .await
        .map_err(db_error)?
        .get(0);
    if existing > 0 {
        return u16::try_from(existing).map_err(StoreError::corrupt);
    }
    let used: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM events) OR EXISTS (SELECT 1 FROM meta)",
            &[],
        )
        .await
        .map_err(db_error)?
        .get(0);
    let count = if used { 1 } else { wanted.max(1) };
    tx.execute(
        "INSERT INTO shards (shard_id, reserved)
         SELECT n, CASE WHEN n = 0 THEN COALESCE((SELECT value FROM meta WHERE key = 'high_water'), 0) ELSE 0 END
         FROM generate_series(0, $1 - 1) AS n",
        &[&i32::from(count)],
    )
    .await
    .map_err(db_error)?;
    tracing::info!(shards = count, "made the store's shards");
    Ok(count)
}

#[cfg(test)]
mod tests {
    use agentrack::{ExecutionRecord, NewExecution, Tracker, TrackerConfig};

    use super::MIGRATIONS;
    use crate::store::conformance::fresh_postgres;
    use crate::store::{ListQuery, StoreConfig, open};

    /// Rows as migration 7's writer left them (an empty history in the JSON with the true count
    /// of dropped changes, every kept change in `phases`, `phase_count` the total count) read
    /// back the same once migration 8 has run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_of_schema_7_read_back_the_same_after_the_migration() {
        let tracker = Tracker::with_config(TrackerConfig {
            max_phase_history: Some(30),
            ..TrackerConfig::default()
        });
        let mut held: Vec<ExecutionRecord> = Vec::new();
        for changes in [0, 8, 40] {
            let id = tracker.create(NewExecution::new("a", "t", "u")).unwrap().execution_id;
            tracker.start(id).unwrap();
            for step in 0..changes {
                let phase = crate::store::row::nth_phase(step);
                let metadata = serde_json::json!({"step": step}).as_object().cloned();
                tracker.transition(id, phase, metadata).unwrap();
            }
            held.push(tracker.get(id).unwrap());
        }
        assert_eq!(held[2].phase_history_dropped, 10);
        let url = fresh_postgres().await;
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        for sql in &MIGRATIONS[..7] {
            client.batch_execute(sql).await.unwrap();
        }
        client
            .batch_execute(
                "CREATE TABLE schema_version (version BIGINT NOT NULL); INSERT INTO schema_version VALUES (7)",
            )
            .await
            .unwrap();
        for record in &held {
            let mut bare = record.clone();
            bare.phase_history.clear();
            let id = record.execution_id.to_string();
            let total = i64::try_from(record.phase_count()).unwrap();
            client
                .execute(
                    "INSERT INTO executions (execution_id, tenant, user_id, thread_id, agent_name, state,
                        started_at_ms, seq, replay_from, phase_count, record)
                     VALUES ($1, 't', 'u', 'a', 'a', $2, 0, $3, 0, $4, $5)",
                    &[
                        &id,
                        &record.state.as_str(),
                        &i64::try_from(record.seq).unwrap(),
                        &total,
                        &serde_json::to_string(&bare).unwrap(),
                    ],
                )
                .await
                .unwrap();
            for (n, transition) in (record.phase_history_dropped..).zip(&record.phase_history) {
                client
                    .execute(
                        "INSERT INTO phases (execution_id, n, transition) VALUES ($1, $2, $3)",
                        &[
                            &id,
                            &i64::try_from(n).unwrap(),
                            &serde_json::to_string(transition).unwrap(),
                        ],
                    )
                    .await
                    .unwrap();
            }
        }
        let config = StoreConfig {
            url: Some(url),
            ..StoreConfig::default()
        };
        let store = open(&config, std::path::Path::new(".")).await.unwrap();
        for record in &held {
            assert_eq!(store.get(record.execution_id).await.unwrap().as_ref(), Some(record));
        }
        let mut page = store
            .list(ListQuery {
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .unwrap()
            .records;
        page.sort_by_key(|record| held.iter().position(|h| h.execution_id == record.execution_id));
        assert_eq!(page, held);
    }
}
