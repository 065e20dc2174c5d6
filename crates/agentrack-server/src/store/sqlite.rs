//! The embedded store: one SQLite file in WAL mode.
//!
//! One connection writes (owned by the pipeline's thread); readers take a connection from a small
//! pool, which WAL lets run beside the writer. The schema is versioned: `schema_version` holds the
//! number of the last migration applied, and [`MIGRATIONS`] are applied in order at open.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use agentrack::{ExecutionId, ExecutionRecord};
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};

use super::baseline::{RawInserts, RawRow};
use super::row::{self, EventColumns, ExecutionColumns, from_millis, from_sql, millis, to_sql};
use super::{
    Batch, ClusterStore, Cutoff, EventQuery, KeyOp, KeyState, ListQuery, Loaded, Page, Purged, Revoked, RowUpdate,
    ShardId, StateCount, Store, StoreConfig, StoreError, StoreFuture, StoreUrl, StoreWriter, StoredEvent, Synchronous,
    TakenTicket, Ticket,
};
use super::{replay, unreadable};
use crate::auth::{Role, TokenGrant, TokenInfo, token_id};

/// The schema, one migration per version (version = index + 1).
const MIGRATIONS: &[&str] = &[
    // 1: events, materialised executions, tokens, metadata.
    "CREATE TABLE events (
        global_seq   INTEGER PRIMARY KEY,
        execution_id TEXT,
        seq          INTEGER,
        tenant       TEXT,
        user_id      TEXT,
        thread_id    TEXT,
        type         TEXT NOT NULL,
        timestamp_ms INTEGER NOT NULL,
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
        started_at_ms   INTEGER NOT NULL,
        completed_at_ms INTEGER,
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
        created_at_ms INTEGER NOT NULL
    );
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );",
    // 2: rows may lag their log by replayable events (see replay.rs): each row says how far it
    // goes (`seq`) and where a replay onto it starts in the log (`replay_from`). Replays and
    // retention scan the log by sequence number, so it keeps no other index.
    "ALTER TABLE executions ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN replay_from INTEGER NOT NULL DEFAULT 0;
    UPDATE executions SET seq = COALESCE(json_extract(record, '$.seq'), 0),
        replay_from = (SELECT COALESCE(MAX(global_seq), 0) FROM events);
    DROP INDEX events_by_tenant;
    DROP INDEX events_by_execution;",
    // 3: tokens get a public id (derived from the hash, see `auth::token_id`), an optional expiry
    // and a revocation time; single-use event-stream tickets (see `api::events`).
    "ALTER TABLE tokens ADD COLUMN token_id TEXT;
    ALTER TABLE tokens ADD COLUMN expires_at_ms INTEGER;
    ALTER TABLE tokens ADD COLUMN revoked_at_ms INTEGER;
    UPDATE tokens SET token_id = 'tok_' || substr(token_hash, 1, 16);
    CREATE UNIQUE INDEX tokens_by_id ON tokens (token_id);
    CREATE TABLE tickets (
        ticket_hash   TEXT PRIMARY KEY,
        token_hash    TEXT NOT NULL,
        expires_at_ms INTEGER NOT NULL
    );",
    // 4: idempotency keys (store/idempotency.rs): a request's fingerprint, then its answer
    // (status NULL while it runs); expired by age.
    "CREATE TABLE idempotency_keys (
        scope         TEXT NOT NULL,
        key           TEXT NOT NULL,
        fingerprint   TEXT NOT NULL,
        status        INTEGER,
        body          TEXT,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at_ms);",
    // 5: phase history out of the execution row, which every write rewrote whole: one row per
    // change, appended once (`n` counts from the execution's first change; the cap deletes the
    // oldest), and the row says how many changes it accounts for (`phase_count`).
    "CREATE TABLE phases (
        execution_id TEXT NOT NULL,
        n            INTEGER NOT NULL,
        transition   TEXT NOT NULL,
        PRIMARY KEY (execution_id, n)
    ) WITHOUT ROWID;
    ALTER TABLE executions ADD COLUMN phase_count INTEGER NOT NULL DEFAULT 0;
    INSERT INTO phases (execution_id, n, transition)
        SELECT e.execution_id, COALESCE(json_extract(e.record, '$.phase_history_dropped'), 0) + j.key, j.value
        FROM executions AS e, json_each(e.record, '$.phase_history') AS j;
    UPDATE executions SET
        phase_count = COALESCE(json_extract(record, '$.phase_history_dropped'), 0)
            + COALESCE(json_array_length(record, '$.phase_history'), 0),
        record = json_set(record, '$.phase_history', json('[]'));",
    // 6: the recent tail of the history back in the row (`row::ExecutionColumns::of`), whose
    // `phase_history_dropped` now says where that tail starts, `phases` holding the kept changes
    // before it. The rows 5 (and the writer of its time) left have an empty tail with every
    // kept change in `phases`: their tail starts at `phase_count`.
    "UPDATE executions SET record = json_set(record, '$.phase_history_dropped', phase_count)
        WHERE phase_count <> COALESCE(json_extract(record, '$.phase_history_dropped'), 0);",
];

fn pragma(synchronous: Synchronous) -> &'static str {
    match synchronous {
        Synchronous::Full => "FULL",
        Synchronous::Normal => "NORMAL",
    }
}

fn db_error(error: rusqlite::Error) -> StoreError {
    StoreError::database(error)
}

/// The SQLite store at one file.
#[derive(Debug, Clone)]
struct SqliteStore {
    path: PathBuf,
    synchronous: Synchronous,
    readers: Arc<Readers>,
}

#[derive(Debug)]
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

const IDLE_READERS: usize = 4;

impl Readers {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.idle.lock().pop();
        let conn = match conn {
            Some(conn) => conn,
            None => open_connection(&self.path, true, Synchronous::Normal)?,
        };
        let result = f(&conn).map_err(db_error);
        let mut idle = self.idle.lock();
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        result
    }
}

fn open_connection(path: &Path, read_only: bool, synchronous: Synchronous) -> Result<Connection, StoreError> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(|error| StoreError::Io {
        path: path.display().to_string(),
        source: error.into(),
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db_error)?;
    if !read_only {
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(db_error)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::database(format!(
                "could not enable WAL (journal mode is {mode})"
            )));
        }
        conn.pragma_update(None, "synchronous", pragma(synchronous))
            .map_err(db_error)?;
    }
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        .map_err(db_error)?;
    let current: i64 = conn
        .query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |row| {
            row.get(0)
        })
        .map_err(db_error)?;
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
        let tx = conn.transaction().map_err(db_error)?;
        tx.execute_batch(sql).map_err(db_error)?;
        tx.execute("DELETE FROM schema_version", []).map_err(db_error)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (?1)", [version])
            .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        tracing::info!(version, "applied store migration");
    }
    Ok(())
}

/// Opens the store a `sqlite://PATH` URL names (see [`super::open`]).
#[allow(
    clippy::needless_pass_by_value,
    reason = "one signature for every scheme's opener (see open.rs): PostgreSQL's keeps the URL"
)]
pub(super) fn open(url: StoreUrl, config: StoreConfig) -> StoreFuture<'static, Arc<dyn Store>> {
    Box::pin(async move {
        let path = url.path();
        let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path, config.synchronous))
            .await
            .map_err(|error| StoreError::Task(error.to_string()))??;
        Ok(Arc::new(store) as Arc<dyn Store>)
    })
}

impl SqliteStore {
    /// Opens (creating it and its directory if needed) the store in the file `path` and applies
    /// migrations.
    ///
    /// # Errors
    ///
    /// The directory cannot be created, the file cannot be opened, or a migration fails.
    pub(super) fn open(path: &Path, synchronous: Synchronous) -> Result<Self, StoreError> {
        let private = |error: crate::files::FileError| StoreError::Io {
            path: path.display().to_string(),
            source: Box::new(error),
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            crate::files::create_dir(dir).map_err(private)?;
        }
        // Created here, 0600, before SQLite opens it (SQLite would use the umask); its -wal and
        // -shm files take the database's mode, or are tightened if an older version made them.
        crate::files::private_file(path).map_err(private)?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            crate::files::private_file_if_present(Path::new(&side)).map_err(private)?;
        }
        let path = path.to_path_buf();
        let mut conn = open_connection(&path, false, synchronous)?;
        migrate(&mut conn)?;
        drop(conn);
        Ok(Self {
            readers: Arc::new(Readers {
                path: path.clone(),
                idle: Mutex::new(Vec::new()),
            }),
            path,
            synchronous,
        })
    }

    /// The schema version on disk.
    ///
    /// # Errors
    ///
    /// A database error.
    #[cfg(test)]
    fn schema_version(&self) -> Result<i64, StoreError> {
        self.readers
            .with(|conn| conn.query_row("SELECT MAX(version) FROM schema_version", [], |row| row.get(0)))
    }

    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let readers = Arc::clone(&self.readers);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || readers.with(f))
                .await
                .map_err(|error| StoreError::Task(error.to_string()))?
        })
    }

    /// Loads what start-up needs (blocking).
    fn load_now(&self, finished_since: DateTime<Utc>) -> Result<Loaded, StoreError> {
        self.readers.with(|conn| load(conn, finished_since))
    }
}

fn decode_record(text: &str) -> rusqlite::Result<ExecutionRecord> {
    serde_json::from_str(text)
        .map_err(|error| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error)))
}

/// The columns [`grant_from_row`] reads, then those [`info_from_row`] adds.
const GRANT_COLUMNS: &str = "role, tenant, user_id, label, created_at_ms, expires_at_ms, token_id, revoked_at_ms";

/// Gives `records`, read from their rows (which hold the recent tail of each history), the
/// kept changes before that tail from `phases` (see `row::attach_phases`).
fn with_phases(conn: &Connection, records: &mut [ExecutionRecord]) -> rusqlite::Result<()> {
    let mut statement =
        conn.prepare_cached("SELECT execution_id, n, transition FROM phases WHERE execution_id = ?1 ORDER BY n")?;
    let mut phases = Vec::new();
    // A row whose tail starts at the execution's first change (as decoded, its
    // `phase_history_dropped` is where the tail starts) has nothing in `phases`.
    for record in records.iter().filter(|record| record.phase_history_dropped > 0) {
        let rows = statement.query_map([record.execution_id.to_string()], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            phases.push(row?);
        }
    }
    row::attach_phases(
        records,
        phases.iter().map(|(id, n, json)| (id.as_str(), *n, json.as_str())),
    );
    Ok(())
}

fn grant_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenGrant> {
    let role: String = row.get(0)?;
    let role = role
        .parse::<Role>()
        .map_err(|error| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error)))?;
    Ok(TokenGrant {
        role,
        tenant: row.get(1)?,
        user_id: row.get(2)?,
        label: row.get(3)?,
        created_at: from_millis(row.get(4)?),
        expires_at: row.get::<_, Option<i64>>(5)?.map(from_millis),
    })
}

fn info_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        grant: grant_from_row(row)?,
        id: row.get(6)?,
        revoked_at: row.get::<_, Option<i64>>(7)?.map(from_millis),
    })
}

fn load(conn: &Connection, finished_since: DateTime<Utc>) -> rusqlite::Result<Loaded> {
    let mut records = Vec::new();
    let mut statement = conn.prepare(
        "SELECT execution_id, record FROM executions
         WHERE completed_at_ms IS NULL OR completed_at_ms >= ?1 ORDER BY execution_id",
    )?;
    let mut rows = statement.query([millis(finished_since)])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let text: String = row.get(1)?;
        match serde_json::from_str::<ExecutionRecord>(&text) {
            Ok(record) => records.push(record),
            Err(error) => {
                unreadable::skip(&id, &error);
            }
        }
    }
    let mut statement = conn.prepare(
        "SELECT p.execution_id, p.n, p.transition FROM phases AS p JOIN executions AS e USING (execution_id)
         WHERE e.completed_at_ms IS NULL OR e.completed_at_ms >= ?1 ORDER BY p.execution_id, p.n",
    )?;
    let phases = statement
        .query_map([millis(finished_since)], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    row::attach_phases(
        &mut records,
        phases.iter().map(|(id, n, json)| (id.as_str(), *n, json.as_str())),
    );
    // Alive rows may lag their log by replayable events.
    let mut statement = conn.prepare(
        "SELECT json FROM events WHERE global_seq >
            (SELECT COALESCE(MIN(replay_from), 0) FROM executions WHERE completed_at_ms IS NULL)
         ORDER BY global_seq",
    )?;
    let tail = statement
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let replayed = replay::catch_up(&mut records, tail.iter().map(String::as_str));
    let stored_max: i64 = conn.query_row("SELECT COALESCE(MAX(global_seq), 0) FROM events", [], |row| row.get(0))?;
    let meta: Option<i64> = conn
        .query_row("SELECT value FROM meta WHERE key = 'high_water'", [], |row| row.get(0))
        .optional()?;
    let mut statement = conn.prepare("SELECT tenant, user_id, state, COUNT(*) FROM executions GROUP BY 1, 2, 3")?;
    let counts = statement
        .query_map([], |row| {
            let state: String = row.get(2)?;
            let count: i64 = row.get(3)?;
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, state, count))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .filter_map(|(tenant, user_id, state, count)| {
            Some(StateCount {
                tenant,
                user_id,
                state: state.parse().ok()?,
                count: from_sql(count),
            })
        })
        .collect();
    Ok(Loaded {
        records,
        counts,
        high_water: from_sql(stored_max.max(meta.unwrap_or(0))),
        replayed,
    })
}

impl Store for SqliteStore {
    fn shard_count(&self) -> u16 {
        1
    }

    fn cluster(&self) -> Option<&dyn ClusterStore> {
        None
    }

    fn load(&self, shard: ShardId, finished_since: DateTime<Utc>) -> StoreFuture<'_, Loaded> {
        let store = self.clone();
        Box::pin(async move {
            if shard != 0 {
                return Err(StoreError::database(format!("the embedded store has no shard {shard}")));
            }
            tokio::task::spawn_blocking(move || store.load_now(finished_since))
                .await
                .map_err(|error| StoreError::Task(error.to_string()))?
        })
    }

    fn writer(&self) -> StoreFuture<'_, Box<dyn StoreWriter>> {
        let (path, synchronous) = (self.path.clone(), self.synchronous);
        Box::pin(async move {
            let conn = tokio::task::spawn_blocking(move || open_connection(&path, false, synchronous))
                .await
                .map_err(|error| StoreError::Task(error.to_string()))??;
            Ok(Box::new(SqliteWriter { conn }) as Box<dyn StoreWriter>)
        })
    }

    fn get(&self, id: ExecutionId) -> StoreFuture<'_, Option<ExecutionRecord>> {
        let key = id.to_string();
        self.blocking(move |conn| {
            let row: Option<(String, i64)> = conn
                .query_row(
                    "SELECT record, replay_from FROM executions WHERE execution_id = ?1",
                    [&key],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()?;
            let Some((text, replay_from)) = row else {
                return Ok(None);
            };
            let mut record = decode_record(&text)?;
            with_phases(conn, std::slice::from_mut(&mut record))?;
            if record.is_alive() {
                let mut statement = conn.prepare_cached(
                    "SELECT json FROM events WHERE global_seq > ?1 AND execution_id = ?2 ORDER BY global_seq",
                )?;
                let tail = statement
                    .query_map(params![replay_from, key], |row| row.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                replay::catch_up(std::slice::from_mut(&mut record), tail.iter().map(String::as_str));
            }
            Ok(Some(record))
        })
    }

    fn list(&self, query: ListQuery) -> StoreFuture<'_, Page> {
        self.blocking(move |conn| {
            let mut sql = String::from("SELECT execution_id, record FROM executions WHERE 1 = 1");
            let mut values: Vec<SqlValue> = Vec::new();
            for (column, value) in [
                ("tenant", &query.tenant),
                ("user_id", &query.user_id),
                ("thread_id", &query.thread_id),
                ("agent_name", &query.agent_name),
            ] {
                if let Some(value) = value {
                    let _ = write!(sql, " AND {column} = ?");
                    values.push(SqlValue::Text(value.clone()));
                }
            }
            if let Some(states) = &query.states {
                let marks = vec!["?"; states.len()].join(", ");
                let _ = write!(sql, " AND state IN ({marks})");
                values.extend(states.iter().map(|s| SqlValue::Text(s.as_str().to_owned())));
            }
            if let Some(before) = query.before {
                sql.push_str(" AND execution_id < ?");
                values.push(SqlValue::Text(before.to_string()));
            }
            sql.push_str(" ORDER BY execution_id DESC LIMIT ?");
            values.push(SqlValue::Integer(i64::try_from(query.limit + 1).unwrap_or(i64::MAX)));
            let mut statement = conn.prepare(&sql)?;
            let rows = statement
                .query_map(params_from_iter(values), |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut page = unreadable::page(rows.iter().map(|(id, text)| (id.as_str(), text.as_str())), query.limit);
            with_phases(conn, &mut page.records)?;
            Ok(page)
        })
    }

    fn events(&self, query: EventQuery) -> StoreFuture<'_, Vec<StoredEvent>> {
        self.blocking(move |conn| {
            // One shard: at most one range, of shard 0.
            let Some(range) = query.ranges.iter().find(|range| range.shard == 0) else {
                return Ok(Vec::new());
            };
            let mut sql = String::from("SELECT global_seq, json FROM events WHERE global_seq > ? AND global_seq <= ?");
            let mut values: Vec<SqlValue> = vec![
                SqlValue::Integer(to_sql(range.after)),
                SqlValue::Integer(to_sql(range.up_to)),
            ];
            for (column, value) in [
                ("tenant", query.tenant.clone()),
                ("user_id", query.user_id.clone()),
                ("thread_id", query.thread_id.clone()),
                ("execution_id", query.execution_id.map(|id| id.to_string())),
            ] {
                if let Some(value) = value {
                    let _ = write!(sql, " AND {column} = ?");
                    values.push(SqlValue::Text(value));
                }
            }
            sql.push_str(" ORDER BY global_seq LIMIT ?");
            values.push(SqlValue::Integer(i64::try_from(query.limit).unwrap_or(i64::MAX)));
            let mut statement = conn.prepare(&sql)?;
            let rows = statement.query_map(params_from_iter(values), |row| {
                let seq: i64 = row.get(0)?;
                Ok(StoredEvent {
                    shard: 0,
                    global_seq: from_sql(seq),
                    json: row.get(1)?,
                })
            })?;
            rows.collect()
        })
    }

    fn has_admin_token(&self) -> StoreFuture<'_, bool> {
        self.blocking(|conn| {
            conn.query_row("SELECT EXISTS (SELECT 1 FROM tokens WHERE role = 'admin')", [], |row| {
                row.get(0)
            })
        })
    }

    fn token(&self, hash: String) -> StoreFuture<'_, Option<TokenGrant>> {
        self.blocking(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM tokens WHERE token_hash = ?1 AND revoked_at_ms IS NULL"
            ))?
            .query_row([&hash], grant_from_row)
            .optional()
        })
    }

    fn tokens(&self) -> StoreFuture<'_, Vec<TokenInfo>> {
        self.blocking(|conn| {
            conn.prepare(&format!(
                "SELECT {GRANT_COLUMNS} FROM tokens ORDER BY created_at_ms, token_id"
            ))?
            .query_map([], info_from_row)?
            .collect()
        })
    }
}

/// The benchmark's raw-insert baseline in a fresh file (see [`super::baseline`]), with the
/// store's own connection settings.
pub(super) fn open_raw(url: &StoreUrl, config: &StoreConfig) -> Result<Box<dyn RawInserts>, StoreError> {
    let conn = open_connection(&url.path(), false, config.synchronous)?;
    conn.execute_batch(
        "CREATE TABLE raw_events (
            seq          INTEGER PRIMARY KEY,
            execution_id TEXT NOT NULL,
            type         TEXT NOT NULL,
            json         TEXT NOT NULL
        )",
    )
    .map_err(db_error)?;
    Ok(Box::new(RawSqlite { conn }))
}

struct RawSqlite {
    conn: Connection,
}

impl RawInserts for RawSqlite {
    fn insert_batch(&mut self, rows: &[RawRow]) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(db_error)?;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO raw_events (seq, execution_id, type, json) VALUES (?1, ?2, ?3, ?4)")
                .map_err(db_error)?;
            for row in rows {
                insert
                    .execute(params![row.seq, row.execution_id, row.kind, row.json])
                    .map_err(db_error)?;
            }
        }
        tx.commit().map_err(db_error)
    }
}

/// Retention of the log: the events older than the cut-off, found by walking the log from its
/// start (so no index on time is needed).
const PURGE_EVENTS: &str = "DELETE FROM events WHERE global_seq <
    COALESCE((SELECT global_seq FROM events WHERE timestamp_ms >= ?1 ORDER BY global_seq LIMIT 1),
             (SELECT COALESCE(MAX(global_seq), 0) + 1 FROM events))";

fn write_batch(tx: &rusqlite::Transaction<'_>, batch: &Batch) -> Result<(), StoreError> {
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO events
                    (global_seq, execution_id, seq, tenant, user_id, thread_id, type, timestamp_ms, json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )
            .map_err(db_error)?;
        for event in &batch.events {
            let row = EventColumns::of(event);
            insert
                .execute(params![
                    row.global_seq,
                    row.execution_id,
                    row.seq,
                    row.tenant,
                    row.user_id,
                    row.thread_id,
                    row.kind,
                    row.timestamp_ms,
                    row.json,
                ])
                .map_err(db_error)?;
        }
    }
    for row in &batch.rows {
        match row {
            RowUpdate::Snapshot(record) => write_row(tx, record, batch.replay_from)?,
            RowUpdate::Finish { execution_id, event } => finish_row(tx, *execution_id, event)?,
        }
    }
    if let Some(reserved) = batch.reserved {
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('high_water', ?1)
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
            [to_sql(reserved)],
        )
        .map_err(db_error)?;
    }
    Ok(())
}

/// The single writing connection.
#[derive(Debug)]
struct SqliteWriter {
    conn: Connection,
}

fn write_row(tx: &rusqlite::Transaction<'_>, record: &ExecutionRecord, replay_from: u64) -> Result<(), StoreError> {
    let row = ExecutionColumns::of(record, replay_from)?;
    // The changes before the row's tail are in `phases`, each written once, when the tail moves
    // past it; a row that holds its whole kept history (a golden path's) needs nothing there.
    let tail_from = from_sql(row.phase_count);
    if tail_from > record.phase_history_dropped {
        let stored: Option<i64> = tx
            .prepare_cached("SELECT phase_count FROM executions WHERE execution_id = ?1")
            .and_then(|mut statement| {
                statement
                    .query_row([&row.execution_id], |found| found.get(0))
                    .optional()
            })
            .map_err(db_error)?;
        let added = row::spilled(record, from_sql(stored.unwrap_or(0)), tail_from)?;
        if !added.is_empty() {
            let mut insert = tx
                .prepare_cached("INSERT OR IGNORE INTO phases (execution_id, n, transition) VALUES (?1, ?2, ?3)")
                .map_err(db_error)?;
            for (n, transition) in &added {
                insert
                    .execute(params![row.execution_id, n, transition])
                    .map_err(db_error)?;
            }
        }
    }
    if let Some(below) = row::phases_dropped_below(record) {
        tx.prepare_cached("DELETE FROM phases WHERE execution_id = ?1 AND n < ?2")
            .and_then(|mut statement| statement.execute(params![row.execution_id, below]))
            .map_err(db_error)?;
    }
    tx.prepare_cached(
        "INSERT INTO executions
            (execution_id, tenant, user_id, thread_id, agent_name, state, started_at_ms, completed_at_ms, seq,
             replay_from, phase_count, record)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (execution_id) DO UPDATE SET
            state = excluded.state, completed_at_ms = excluded.completed_at_ms, seq = excluded.seq,
            replay_from = excluded.replay_from, phase_count = MAX(phase_count, excluded.phase_count),
            record = excluded.record",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            row.execution_id,
            row.tenant,
            row.user_id,
            row.thread_id,
            row.agent_name,
            row.state,
            row.started_at_ms,
            row.completed_at_ms,
            row.seq,
            row.replay_from,
            row.phase_count,
            row.record,
        ])
    })
    .map_err(db_error)?;
    Ok(())
}

fn finish_row(tx: &rusqlite::Transaction<'_>, id: ExecutionId, event: &agentrack::Event) -> Result<(), StoreError> {
    let text: Option<String> = tx
        .query_row(
            "SELECT record FROM executions WHERE execution_id = ?1",
            [id.to_string()],
            |row| row.get(0),
        )
        .optional()
        .map_err(db_error)?;
    let Some(mut record) = text.map(|text| row::decode(&text)).transpose()? else {
        return Ok(());
    };
    // Its whole kept history first: the row holds only its tail, and the row written back must
    // keep the true count of dropped changes (the cap's trimming of `phases` relies on it).
    with_phases(tx, std::slice::from_mut(&mut record)).map_err(db_error)?;
    // Terminal: nothing is ever replayed onto it.
    match row::finished(record, event) {
        Some(record) => write_row(tx, &record, 0),
        None => Ok(()),
    }
}

impl StoreWriter for SqliteWriter {
    fn commit(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        if let Some(other) = batches.iter().find(|batch| batch.shard != 0) {
            return Err(StoreError::database(format!(
                "the embedded store has one shard (0), not shard {}",
                other.shard
            )));
        }
        let tx = self.conn.transaction().map_err(db_error)?;
        for batch in batches {
            write_batch(&tx, batch)?;
        }
        tx.commit().map_err(db_error)
    }

    fn purge(&mut self, cutoff: &Cutoff) -> Result<Purged, StoreError> {
        // The file's one shard.
        if !cutoff.shards.contains(&0) {
            return Ok(Purged::default());
        }
        let tx = self.conn.transaction().map_err(db_error)?;
        let events = tx
            .execute(PURGE_EVENTS, [millis(cutoff.events_before)])
            .map_err(db_error)?;
        tx.execute(
            "DELETE FROM phases WHERE execution_id IN
                (SELECT execution_id FROM executions WHERE completed_at_ms IS NOT NULL AND completed_at_ms < ?1)",
            [millis(cutoff.finished_before)],
        )
        .map_err(db_error)?;
        let executions = tx
            .execute(
                "DELETE FROM executions WHERE completed_at_ms IS NOT NULL AND completed_at_ms < ?1",
                [millis(cutoff.finished_before)],
            )
            .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        Ok(Purged {
            executions: executions as u64,
            events: events as u64,
        })
    }

    fn insert_token(&mut self, hash: &str, grant: &TokenGrant) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO tokens (token_hash, role, tenant, user_id, label, created_at_ms, expires_at_ms, token_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    hash,
                    grant.role.as_str(),
                    grant.tenant,
                    grant.user_id,
                    grant.label,
                    millis(grant.created_at),
                    grant.expires_at.map(millis),
                    token_id(hash),
                ],
            )
            .map_err(db_error)?;
        Ok(())
    }

    fn revoke_token(&mut self, id: &str, at: DateTime<Utc>) -> Result<Revoked, StoreError> {
        // One writer: the check of the other admins and the revocation cannot interleave with
        // another revocation.
        let tx = self.conn.transaction().map_err(db_error)?;
        let found = tx
            .query_row(
                &format!("SELECT {GRANT_COLUMNS}, token_hash FROM tokens WHERE token_id = ?1"),
                [id],
                |row| Ok((info_from_row(row)?, row.get::<_, String>(8)?)),
            )
            .optional()
            .map_err(db_error)?;
        let Some((mut info, hash)) = found else {
            return Ok(Revoked::Unknown);
        };
        if info.revoked_at.is_none() {
            if info.grant.role == Role::Admin && !info.grant.expired(at) {
                let others: i64 = tx
                    .query_row(
                        "SELECT COUNT(*) FROM tokens WHERE role = 'admin' AND revoked_at_ms IS NULL
                         AND (expires_at_ms IS NULL OR expires_at_ms > ?1) AND token_id <> ?2",
                        params![millis(at), id],
                        |row| row.get(0),
                    )
                    .map_err(db_error)?;
                if others == 0 {
                    return Ok(Revoked::LastAdmin);
                }
            }
            tx.execute(
                "UPDATE tokens SET revoked_at_ms = ?1 WHERE token_id = ?2",
                params![millis(at), id],
            )
            .map_err(db_error)?;
            info.revoked_at = Some(from_millis(millis(at)));
        }
        tx.commit().map_err(db_error)?;
        Ok(Revoked::Done { info, hash })
    }

    fn insert_ticket(&mut self, ticket: &Ticket) -> Result<(), StoreError> {
        let tx = self.conn.transaction().map_err(db_error)?;
        // Tickets live seconds: the table holds only those of the last moments.
        tx.execute("DELETE FROM tickets WHERE expires_at_ms <= ?1", [millis(Utc::now())])
            .map_err(db_error)?;
        tx.execute(
            "INSERT INTO tickets (ticket_hash, token_hash, expires_at_ms) VALUES (?1, ?2, ?3)",
            params![ticket.hash, ticket.token_hash, millis(ticket.expires_at)],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)
    }

    fn take_ticket(&mut self, hash: &str) -> Result<Option<TakenTicket>, StoreError> {
        self.conn
            .query_row(
                "DELETE FROM tickets WHERE ticket_hash = ?1 RETURNING token_hash, expires_at_ms",
                [hash],
                |row| Ok((row.get(0)?, from_millis(row.get(1)?))),
            )
            .optional()
            .map_err(db_error)
    }

    fn idempotency(&mut self, op: &KeyOp) -> Result<KeyState, StoreError> {
        let changed = |n: usize| Ok(KeyState::Changed(n as u64));
        match op {
            KeyOp::Reserve {
                scope,
                key,
                fingerprint,
                at,
            } => {
                let inserted = self
                    .conn
                    .execute(
                        "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at_ms)
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                        params![scope, key, fingerprint, millis(*at)],
                    )
                    .map_err(db_error)?;
                if inserted == 1 {
                    return Ok(KeyState::Reserved);
                }
                self.conn
                    .query_row(
                        "SELECT fingerprint, status, body FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
                        params![scope, key],
                        |row| Ok(KeyState::stored(row.get(0)?, row.get(1)?, row.get(2)?)),
                    )
                    .map_err(db_error)
            }
            KeyOp::Complete {
                scope,
                key,
                status,
                body,
            } => changed(
                self.conn
                    .execute(
                        "UPDATE idempotency_keys SET status = ?3, body = ?4 WHERE scope = ?1 AND key = ?2",
                        params![scope, key, status, body],
                    )
                    .map_err(db_error)?,
            ),
            KeyOp::Release { scope, key } => changed(
                self.conn
                    .execute(
                        "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND status IS NULL",
                        params![scope, key],
                    )
                    .map_err(db_error)?,
            ),
            KeyOp::Expire { before } => changed(
                self.conn
                    .execute(
                        "DELETE FROM idempotency_keys WHERE created_at_ms < ?1",
                        [millis(*before)],
                    )
                    .map_err(db_error)?,
            ),
        }
    }

    fn close(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .map_err(db_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows as schema 5's writer left them: an empty history in the JSON (with the true count of
    /// dropped changes), every kept change in `phases`, `phase_count` the total count.
    fn write_schema_5_rows(conn: &Connection, records: &[&ExecutionRecord]) {
        for record in records {
            let mut bare = (*record).clone();
            bare.phase_history.clear();
            let id = record.execution_id.to_string();
            conn.execute(
                "INSERT INTO executions (execution_id, tenant, user_id, thread_id, agent_name, state, started_at_ms,
                    seq, replay_from, phase_count, record)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10)",
                params![
                    id,
                    record.tenant,
                    record.user_id,
                    record.thread_id,
                    record.agent_name,
                    record.state.as_str(),
                    millis(record.started_at),
                    to_sql(record.seq),
                    to_sql(record.phase_count()),
                    serde_json::to_string(&bare).unwrap(),
                ],
            )
            .unwrap();
            for (n, transition) in (record.phase_history_dropped..).zip(&record.phase_history) {
                conn.execute(
                    "INSERT INTO phases (execution_id, n, transition) VALUES (?1, ?2, ?3)",
                    params![id, to_sql(n), serde_json::to_string(transition).unwrap()],
                )
                .unwrap();
            }
        }
    }

    fn transitions(tracker: &agentrack::Tracker, id: ExecutionId, count: usize) {
        use agentrack::Phase;
        for step in 0..count {
            let phase = if tracker.get(id).unwrap().current_phase == Phase::Thinking {
                Phase::LlmInteraction
            } else {
                Phase::Thinking
            };
            let metadata = serde_json::json!({"step": step}).as_object().cloned();
            tracker.transition(id, phase, metadata).unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rows_of_schema_5_read_back_the_same_after_the_migration() {
        use agentrack::{NewExecution, Phase, Tracker, TrackerConfig};
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agentrack.db");
        let tracker = Tracker::with_config(TrackerConfig {
            max_phase_history: Some(30),
            ..TrackerConfig::default()
        });
        let ids: Vec<ExecutionId> = (0..3)
            .map(|_| {
                let id = tracker.create(NewExecution::new("a", "t", "u")).unwrap().execution_id;
                tracker.start(id).unwrap();
                id
            })
            .collect();
        // No change; a golden path's few; more than the cap, some dropped.
        for phase in [Phase::WebsocketSetup, Phase::ContextValidation, Phase::Starting] {
            tracker.transition(ids[1], phase, None).unwrap();
            tracker.transition(ids[2], phase, None).unwrap();
        }
        transitions(&tracker, ids[1], 5);
        transitions(&tracker, ids[2], 37);
        let held: Vec<ExecutionRecord> = ids.iter().map(|id| tracker.get(*id).unwrap()).collect();
        assert_eq!(held[2].phase_history_dropped, 10);
        {
            let conn = Connection::open(&file).unwrap();
            for sql in &MIGRATIONS[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(
                "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (5)",
            )
            .unwrap();
            write_schema_5_rows(&conn, &held.iter().collect::<Vec<_>>());
        }
        let store = SqliteStore::open(&file, Synchronous::Normal).unwrap();
        assert_eq!(store.schema_version().unwrap(), 6);
        let reads_back = async |held: &[ExecutionRecord]| {
            for record in held {
                assert_eq!(store.get(record.execution_id).await.unwrap().as_ref(), Some(record));
            }
            let mut loaded = store.load(0, Utc::now()).await.unwrap().records;
            loaded.sort_by_key(|record| ids.iter().position(|id| *id == record.execution_id));
            assert_eq!(loaded, held);
            let mut page = store
                .list(super::super::ListQuery {
                    limit: 10,
                    ..super::super::ListQuery::default()
                })
                .await
                .unwrap()
                .records;
            page.sort_by_key(|record| ids.iter().position(|id| *id == record.execution_id));
            assert_eq!(page, held);
        };
        reads_back(&held).await;
        // Written on by the new writer: the changes schema 5 put in `phases` stay, the row's
        // tail moves on.
        transitions(&tracker, ids[1], 20);
        transitions(&tracker, ids[2], 3);
        let held: Vec<ExecutionRecord> = ids.iter().map(|id| tracker.get(*id).unwrap()).collect();
        let mut writer = store.writer().await.unwrap();
        writer
            .commit(&[Batch {
                rows: held
                    .iter()
                    .map(|record| RowUpdate::Snapshot(Box::new(record.clone())))
                    .collect(),
                ..Batch::default()
            }])
            .unwrap();
        reads_back(&held).await;
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agentrack.db");
        let store = SqliteStore::open(&file, Synchronous::Normal).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            i64::try_from(MIGRATIONS.len()).unwrap()
        );
        drop(store);
        // Reopening applies no migration twice.
        let store = SqliteStore::open(&file, Synchronous::Full).unwrap();
        assert_eq!(
            store.schema_version().unwrap(),
            i64::try_from(MIGRATIONS.len()).unwrap()
        );
        drop(store);
        let conn = Connection::open(&file).unwrap();
        conn.execute("UPDATE schema_version SET version = 99", []).unwrap();
        drop(conn);
        let error = SqliteStore::open(&file, Synchronous::Normal).unwrap_err();
        assert!(matches!(error, StoreError::SchemaTooNew { found: 99, .. }), "{error}");
    }
}
