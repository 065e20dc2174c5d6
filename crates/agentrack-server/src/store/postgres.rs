//! The PostgreSQL store: the same tables and semantics as the embedded SQLite one, on a database
//! that teams already run, back up and replicate.
//!
//! Why tokio-postgres (with deadpool-postgres for the read pool) rather than sqlx: the writer's
//! whole job is one transaction per batch with as few round trips as possible, and tokio-postgres
//! pipelines every statement sent on a connection without waiting for the previous answer,
//! prepares statements explicitly, and binds Rust slices as binary arrays for `UNNEST` — the
//! set-based insert that writes a batch of any size in one statement per table. It is also a
//! smaller build than sqlx, with no compile-time query checking that would need a database at
//! build time.
//!
//! - **Writes** go through one dedicated connection, owned by the pipeline's thread and driven by a
//!   runtime of its own in that thread. A batch is `BEGIN`, then up to three pipelined statements
//!   (events, execution rows, the sequence reservation — each one `INSERT … SELECT FROM UNNEST`,
//!   each sent only when it has something to write), then `COMMIT`. Every statement is idempotent (`ON CONFLICT`), so a batch retried after a
//!   connection died mid-commit cannot write anything twice. A connection that failed is dropped
//!   and made anew on the next attempt: the server reconnects by itself when the database is back.
//! - **Reads** take a connection from a small pool with fast timeouts, so a read during an outage
//!   fails in seconds instead of hanging.
//! - **Migrations** are numbered like SQLite's and applied under an advisory lock, so several
//!   servers starting on one empty database do not race; a newer schema is refused.
//! - **TLS** follows `sslmode` in the URL (`disable`, `prefer` — the default — or `require`). As in
//!   libpq, `prefer` and `require` encrypt without verifying the server; set `[store] ca_file` to
//!   verify its certificate against a CA. A password comes from the URL or `PGPASSWORD`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use agentrack::{ExecutionId, ExecutionRecord};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::baseline::{RawInserts, RawRow};
use super::replay;
use super::row::{self, EventColumns, ExecutionColumns, from_millis, from_sql, millis, to_sql};
use super::{
    Batch, Cutoff, EventQuery, ListQuery, Loaded, Page, Purged, RowUpdate, StateCount, Store, StoreConfig, StoreError,
    StoreFuture, StoreUrl, StoreWriter, StoredEvent,
};
use crate::auth::{Role, TokenGrant};

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
];

/// Any number; it only has to be the same for every agentrack server on one database.
const MIGRATION_LOCK: i64 = 0x6167_656e_7472_6b31;

/// How long connecting may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a read waits for a pooled connection (or to make one) during an outage.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

fn db_error(error: tokio_postgres::Error) -> StoreError {
    StoreError::database(error)
}

/// Where and how to connect: the parsed URL and the TLS connector.
#[derive(Clone)]
struct Target {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
}

impl Target {
    fn new(url: &StoreUrl, store: &StoreConfig) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config =
            url.as_str()
                .parse()
                .map_err(|error: tokio_postgres::Error| StoreError::InvalidUrl {
                    url: url.redacted(),
                    reason: format!("{error}; expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...]"),
                })?;
        if config.get_password().is_none()
            && let Ok(password) = std::env::var("PGPASSWORD")
        {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("agentrack");
        Ok(Self {
            config,
            tls: tls::connector(store.ca_file.as_deref())?,
        })
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let (client, connection) = self.config.connect(self.tls.clone()).await.map_err(db_error)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "PostgreSQL connection ended");
            }
        });
        Ok(client)
    }
}

/// Opens the store a `postgres://` URL names (see [`super::open`]).
pub(super) fn open(url: StoreUrl, config: StoreConfig) -> StoreFuture<'static, Arc<dyn Store>> {
    Box::pin(async move {
        let target = Target::new(&url, &config)?;
        let mut client = target.connect().await?;
        migrate(&mut client).await?;
        let manager = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(POOL_TIMEOUT))
            .create_timeout(Some(POOL_TIMEOUT))
            .recycle_timeout(Some(POOL_TIMEOUT))
            .build()
            .map_err(StoreError::database)?;
        Ok(Arc::new(PgStore { pool, target }) as Arc<dyn Store>)
    })
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
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
    tx.commit().await.map_err(db_error)
}

/// The PostgreSQL store: a pool for reads; the writer connects on its own.
struct PgStore {
    pool: Pool,
    target: Target,
}

impl PgStore {
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(StoreError::database)
    }
}

fn grant_from_row(row: &tokio_postgres::Row) -> Result<TokenGrant, StoreError> {
    let role: String = row.get(0);
    Ok(TokenGrant {
        role: role.parse::<Role>().map_err(StoreError::corrupt)?,
        tenant: row.get(1),
        user_id: row.get(2),
        label: row.get(3),
        created_at: from_millis(row.get(4)),
    })
}

/// A query with `$n` parameters, built one condition at a time.
#[derive(Default)]
struct Query {
    sql: String,
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Query {
    fn new(sql: &str) -> Self {
        Self {
            sql: sql.to_owned(),
            values: Vec::new(),
        }
    }

    /// Appends `text` with `$` replaced by the next parameter, bound to `value`.
    fn push(&mut self, text: &str, value: impl ToSql + Sync + Send + 'static) {
        self.values.push(Box::new(value));
        let _ = write!(self.sql, "{}", text.replace('$', &format!("${}", self.values.len())));
    }

    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|value| value.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

async fn load(client: &Client, finished_since: DateTime<Utc>) -> Result<Loaded, StoreError> {
    let rows = client
        .query(
            "SELECT execution_id, record FROM executions
             WHERE completed_at_ms IS NULL OR completed_at_ms >= $1 ORDER BY execution_id",
            &[&millis(finished_since)],
        )
        .await
        .map_err(db_error)?;
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        match row::decode(row.get(1)) {
            Ok(record) => records.push(record),
            Err(error) => tracing::error!(execution_id = %id, %error, "skipping an unreadable stored execution"),
        }
    }
    // Alive rows may lag their log by replayable events.
    let tail = client
        .query(
            "SELECT json FROM events WHERE global_seq >
                (SELECT COALESCE(MIN(replay_from), 0) FROM executions WHERE completed_at_ms IS NULL)
             ORDER BY global_seq",
            &[],
        )
        .await
        .map_err(db_error)?;
    let replayed = replay::catch_up(&mut records, tail.iter().map(|row| row.get::<_, &str>(0)));
    let stored_max: i64 = client
        .query_one("SELECT COALESCE(MAX(global_seq), 0) FROM events", &[])
        .await
        .map_err(db_error)?
        .get(0);
    let reserved: Option<i64> = client
        .query_opt("SELECT value FROM meta WHERE key = 'high_water'", &[])
        .await
        .map_err(db_error)?
        .map(|row| row.get(0));
    let has_admin_token: bool = client
        .query_one("SELECT EXISTS (SELECT 1 FROM tokens WHERE role = 'admin')", &[])
        .await
        .map_err(db_error)?
        .get(0);
    let counts = client
        .query(
            "SELECT tenant, user_id, state, COUNT(*) FROM executions GROUP BY 1, 2, 3",
            &[],
        )
        .await
        .map_err(db_error)?
        .into_iter()
        .filter_map(|row| {
            let state: String = row.get(2);
            Some(StateCount {
                tenant: row.get(0),
                user_id: row.get(1),
                state: state.parse().ok()?,
                count: from_sql(row.get(3)),
            })
        })
        .collect();
    Ok(Loaded {
        records,
        counts,
        high_water: from_sql(stored_max.max(reserved.unwrap_or(0))),
        has_admin_token,
        replayed,
    })
}

impl Store for PgStore {
    fn load(&self, finished_since: DateTime<Utc>) -> StoreFuture<'_, Loaded> {
        Box::pin(async move {
            let client = self.client().await?;
            load(&client, finished_since).await
        })
    }

    fn writer(&self) -> StoreFuture<'_, Box<dyn StoreWriter>> {
        let target = self.target.clone();
        Box::pin(async move {
            let writer = tokio::task::spawn_blocking(move || PgWriter::open(target))
                .await
                .map_err(|error| StoreError::Task(error.to_string()))??;
            Ok(Box::new(writer) as Box<dyn StoreWriter>)
        })
    }

    fn get(&self, id: ExecutionId) -> StoreFuture<'_, Option<ExecutionRecord>> {
        Box::pin(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT record, replay_from FROM executions WHERE execution_id = $1")
                .await
                .map_err(db_error)?;
            let key = id.to_string();
            let row = client.query_opt(&statement, &[&key]).await.map_err(db_error)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let mut record = row::decode(row.get(0))?;
            let replay_from: i64 = row.get(1);
            if record.is_alive() {
                let statement = client
                    .prepare_cached(
                        "SELECT json FROM events WHERE global_seq > $1 AND execution_id = $2 ORDER BY global_seq",
                    )
                    .await
                    .map_err(db_error)?;
                let tail = client
                    .query(&statement, &[&replay_from, &key])
                    .await
                    .map_err(db_error)?;
                replay::catch_up(
                    std::slice::from_mut(&mut record),
                    tail.iter().map(|row| row.get::<_, &str>(0)),
                );
            }
            Ok(Some(record))
        })
    }

    fn list(&self, query: ListQuery) -> StoreFuture<'_, Page> {
        Box::pin(async move {
            let mut sql = Query::new("SELECT record FROM executions WHERE TRUE");
            for (column, value) in [
                ("tenant", query.tenant),
                ("user_id", query.user_id),
                ("thread_id", query.thread_id),
                ("agent_name", query.agent_name),
            ] {
                if let Some(value) = value {
                    sql.push(&format!(" AND {column} = $"), value);
                }
            }
            if let Some(states) = &query.states {
                let states: Vec<String> = states.iter().map(|s| s.as_str().to_owned()).collect();
                sql.push(" AND state = ANY($)", states);
            }
            if let Some(before) = query.before {
                sql.push(" AND execution_id < $", before.to_string());
            }
            sql.push(
                " ORDER BY execution_id DESC LIMIT $",
                i64::try_from(query.limit + 1).unwrap_or(i64::MAX),
            );
            let client = self.client().await?;
            let statement = client.prepare_cached(&sql.sql).await.map_err(db_error)?;
            let rows = client.query(&statement, &sql.params()).await.map_err(db_error)?;
            let mut records = rows
                .iter()
                .map(|row| row::decode(row.get(0)))
                .collect::<Result<Vec<_>, _>>()?;
            let next_cursor = if records.len() > query.limit {
                records.truncate(query.limit);
                records.last().map(|record| record.execution_id)
            } else {
                None
            };
            Ok(Page { records, next_cursor })
        })
    }

    fn events(&self, query: EventQuery) -> StoreFuture<'_, Vec<StoredEvent>> {
        Box::pin(async move {
            let mut sql = Query::new("SELECT global_seq, json FROM events WHERE TRUE");
            sql.push(" AND global_seq > $", to_sql(query.after));
            sql.push(" AND global_seq <= $", to_sql(query.up_to));
            for (column, value) in [
                ("tenant", query.tenant),
                ("user_id", query.user_id),
                ("thread_id", query.thread_id),
                ("execution_id", query.execution_id.map(|id| id.to_string())),
            ] {
                if let Some(value) = value {
                    sql.push(&format!(" AND {column} = $"), value);
                }
            }
            sql.push(
                " ORDER BY global_seq LIMIT $",
                i64::try_from(query.limit).unwrap_or(i64::MAX),
            );
            let client = self.client().await?;
            let statement = client.prepare_cached(&sql.sql).await.map_err(db_error)?;
            let rows = client.query(&statement, &sql.params()).await.map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|row| StoredEvent {
                    global_seq: from_sql(row.get(0)),
                    json: row.get(1),
                })
                .collect())
        })
    }

    fn token(&self, hash: String) -> StoreFuture<'_, Option<TokenGrant>> {
        Box::pin(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached("SELECT role, tenant, user_id, label, created_at_ms FROM tokens WHERE token_hash = $1")
                .await
                .map_err(db_error)?;
            let row = client.query_opt(&statement, &[&hash]).await.map_err(db_error)?;
            row.as_ref().map(grant_from_row).transpose()
        })
    }
}

/// The writer's connection and its prepared statements.
struct Connection {
    client: Client,
    insert_events: Statement,
    upsert_executions: Statement,
    reserve: Statement,
}

impl Connection {
    async fn open(target: &Target) -> Result<Self, StoreError> {
        let client = target.connect().await?;
        let (insert_events, upsert_executions, reserve) = tokio::try_join!(
            client.prepare(
                "INSERT INTO events
                    (global_seq, execution_id, seq, tenant, user_id, thread_id, type, timestamp_ms, json)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[],
                                      $7::text[], $8::bigint[], $9::text[])
                 ON CONFLICT (global_seq) DO NOTHING",
            ),
            client.prepare(
                "INSERT INTO executions
                    (execution_id, tenant, user_id, thread_id, agent_name, state, started_at_ms, completed_at_ms,
                     seq, replay_from, record)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::text[])
                 ON CONFLICT (execution_id) DO UPDATE SET
                    state = excluded.state, completed_at_ms = excluded.completed_at_ms, seq = excluded.seq,
                    replay_from = excluded.replay_from, record = excluded.record",
            ),
            client.prepare(
                "INSERT INTO meta (key, value) VALUES ('high_water', $1)
                 ON CONFLICT (key) DO UPDATE SET value = GREATEST(meta.value, excluded.value)",
            ),
        )
        .map_err(db_error)?;
        Ok(Self {
            client,
            insert_events,
            upsert_executions,
            reserve,
        })
    }

    async fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let rows = self.rows(batch).await?;
        let rows: Vec<ExecutionColumns<'_>> = rows
            .iter()
            .map(|(record, replay_from)| ExecutionColumns::of(record, *replay_from))
            .collect::<Result<_, _>>()?;
        let events: Vec<EventColumns<'_>> = batch.events.iter().map(|event| EventColumns::of(event)).collect();
        let events = EventArrays::of(&events);
        let executions = ExecutionArrays::of(&rows);
        let reserved = batch.reserved.map(to_sql);
        let (event_params, row_params) = (events.params(), executions.params());
        let tx = self.client.transaction().await.map_err(db_error)?;
        // Pipelined: the statements go out together (a future sends its statement when first
        // polled, and join! polls in order) and are answered together; one with nothing to write
        // is not sent. The first error in order is the cause; the ones after it only say the
        // transaction was aborted.
        let (events, executions, reserved) = tokio::join!(
            async {
                if batch.events.is_empty() {
                    Ok(0)
                } else {
                    tx.execute(&self.insert_events, &event_params).await
                }
            },
            async {
                if rows.is_empty() {
                    Ok(0)
                } else {
                    tx.execute(&self.upsert_executions, &row_params).await
                }
            },
            async {
                match &reserved {
                    Some(reserved) => tx.execute(&self.reserve, &[reserved]).await,
                    None => Ok(0),
                }
            },
        );
        events.and(executions).and(reserved).map_err(db_error)?;
        tx.commit().await.map_err(db_error)
    }

    /// The records to write: every snapshot, and for each execution that left memory, its stored
    /// record with the terminal event applied.
    /// With where a replay onto each starts (none onto a finished one).
    async fn rows<'a>(
        &self,
        batch: &'a Batch,
    ) -> Result<Vec<(std::borrow::Cow<'a, ExecutionRecord>, u64)>, StoreError> {
        let mut rows = Vec::with_capacity(batch.rows.len());
        let mut finishing = Vec::new();
        for update in &batch.rows {
            match update {
                RowUpdate::Snapshot(record) => rows.push((std::borrow::Cow::Borrowed(&**record), batch.replay_from)),
                RowUpdate::Finish { execution_id, event } => finishing.push((execution_id.to_string(), event)),
            }
        }
        if finishing.is_empty() {
            return Ok(rows);
        }
        let ids: Vec<&str> = finishing.iter().map(|(id, _)| id.as_str()).collect();
        let stored = self
            .client
            .query(
                "SELECT execution_id, record FROM executions WHERE execution_id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(db_error)?;
        for found in stored {
            let id: &str = found.get(0);
            let Some((_, event)) = finishing.iter().find(|(wanted, _)| wanted == id) else {
                continue;
            };
            if let Some(record) = row::finished(row::decode(found.get(1))?, event) {
                rows.push((std::borrow::Cow::Owned(record), 0));
            }
        }
        Ok(rows)
    }
}

/// A batch's events as the column arrays `UNNEST` takes.
struct EventArrays<'a> {
    global_seq: Vec<i64>,
    execution_id: Vec<Option<&'a str>>,
    seq: Vec<Option<i64>>,
    tenant: Vec<Option<&'a str>>,
    user_id: Vec<Option<&'a str>>,
    thread_id: Vec<Option<&'a str>>,
    kind: Vec<&'a str>,
    timestamp_ms: Vec<i64>,
    json: Vec<&'a str>,
}

impl<'a> EventArrays<'a> {
    fn of(events: &'a [EventColumns<'a>]) -> Self {
        Self {
            global_seq: events.iter().map(|e| e.global_seq).collect(),
            execution_id: events.iter().map(|e| e.execution_id.as_deref()).collect(),
            seq: events.iter().map(|e| e.seq).collect(),
            tenant: events.iter().map(|e| e.tenant).collect(),
            user_id: events.iter().map(|e| e.user_id).collect(),
            thread_id: events.iter().map(|e| e.thread_id).collect(),
            kind: events.iter().map(|e| e.kind).collect(),
            timestamp_ms: events.iter().map(|e| e.timestamp_ms).collect(),
            json: events.iter().map(|e| e.json).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 9] {
        [
            &self.global_seq,
            &self.execution_id,
            &self.seq,
            &self.tenant,
            &self.user_id,
            &self.thread_id,
            &self.kind,
            &self.timestamp_ms,
            &self.json,
        ]
    }
}

/// A batch's execution rows as the column arrays `UNNEST` takes.
struct ExecutionArrays<'a> {
    execution_id: Vec<&'a str>,
    tenant: Vec<&'a str>,
    user_id: Vec<&'a str>,
    thread_id: Vec<&'a str>,
    agent_name: Vec<&'a str>,
    state: Vec<&'a str>,
    started_at_ms: Vec<i64>,
    completed_at_ms: Vec<Option<i64>>,
    seq: Vec<i64>,
    replay_from: Vec<i64>,
    record: Vec<&'a str>,
}

impl<'a> ExecutionArrays<'a> {
    fn of(rows: &'a [ExecutionColumns<'a>]) -> Self {
        Self {
            execution_id: rows.iter().map(|r| r.execution_id.as_str()).collect(),
            tenant: rows.iter().map(|r| r.tenant).collect(),
            user_id: rows.iter().map(|r| r.user_id).collect(),
            thread_id: rows.iter().map(|r| r.thread_id).collect(),
            agent_name: rows.iter().map(|r| r.agent_name).collect(),
            state: rows.iter().map(|r| r.state).collect(),
            started_at_ms: rows.iter().map(|r| r.started_at_ms).collect(),
            completed_at_ms: rows.iter().map(|r| r.completed_at_ms).collect(),
            seq: rows.iter().map(|r| r.seq).collect(),
            replay_from: rows.iter().map(|r| r.replay_from).collect(),
            record: rows.iter().map(|r| r.record.as_str()).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.execution_id,
            &self.tenant,
            &self.user_id,
            &self.thread_id,
            &self.agent_name,
            &self.state,
            &self.started_at_ms,
            &self.completed_at_ms,
            &self.seq,
            &self.replay_from,
            &self.record,
        ]
    }
}

/// The single writer: runs on the pipeline's thread and drives its connection on a runtime of
/// its own, in that thread — a round trip then costs no hop between threads, which at one
/// commit per call is most of the commit's time. A failed connection is dropped and made anew
/// on the next call.
struct PgWriter {
    runtime: Option<tokio::runtime::Runtime>,
    target: Target,
    connection: Option<Connection>,
}

impl PgWriter {
    /// Connects (blocking).
    fn open(target: Target) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| StoreError::Task(error.to_string()))?;
        let connection = runtime.block_on(Connection::open(&target))?;
        Ok(Self {
            runtime: Some(runtime),
            target,
            connection: Some(connection),
        })
    }
}

impl Drop for PgWriter {
    fn drop(&mut self) {
        self.connection = None;
        // Without blocking: the writer may be dropped where blocking is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl PgWriter {
    /// Runs `work` on a live connection; on failure the connection is dropped, so that the next
    /// call (the pipeline retries) reconnects.
    fn with<T>(&mut self, work: impl AsyncFnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Task("the store writer was closed".into()));
        };
        let (target, slot) = (&self.target, &mut self.connection);
        runtime.block_on(async move {
            if slot.as_ref().is_none_or(|connection| connection.client.is_closed()) {
                *slot = None;
                *slot = Some(Connection::open(target).await?);
            }
            let Some(connection) = slot.as_mut() else {
                return Err(StoreError::Task("no connection".into()));
            };
            let result = work(connection).await;
            if result.is_err() {
                *slot = None;
            }
            result
        })
    }
}

impl StoreWriter for PgWriter {
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        self.with(async |connection| connection.commit(batch).await)
    }

    fn purge(&mut self, cutoff: &Cutoff) -> Result<Purged, StoreError> {
        let (events_before, finished_before) = (millis(cutoff.events_before), millis(cutoff.finished_before));
        self.with(async move |connection| {
            let tx = connection.client.transaction().await.map_err(db_error)?;
            // Retention of the log: events older than the cut-off, found by walking the log from its
            // start (no index on time is needed).
            let events = tx
                .execute(
                    "DELETE FROM events WHERE global_seq <
                        COALESCE((SELECT global_seq FROM events WHERE timestamp_ms >= $1 ORDER BY global_seq LIMIT 1),
                                 (SELECT COALESCE(MAX(global_seq), 0) + 1 FROM events))",
                    &[&events_before],
                )
                .await
                .map_err(db_error)?;
            let executions = tx
                .execute(
                    "DELETE FROM executions WHERE completed_at_ms IS NOT NULL AND completed_at_ms < $1",
                    &[&finished_before],
                )
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(Purged { executions, events })
        })
    }

    fn insert_token(&mut self, hash: &str, grant: &TokenGrant) -> Result<(), StoreError> {
        self.with(async |connection| {
            connection
                .client
                .execute(
                    "INSERT INTO tokens (token_hash, role, tenant, user_id, label, created_at_ms)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &hash,
                        &grant.role.as_str(),
                        &grant.tenant,
                        &grant.user_id,
                        &grant.label,
                        &millis(grant.created_at),
                    ],
                )
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn check(&mut self) -> Result<(), StoreError> {
        self.with(async |connection| {
            connection
                .client
                .simple_query("SELECT 1")
                .await
                .map(drop)
                .map_err(db_error)
        })
    }

    fn close(&mut self) -> Result<(), StoreError> {
        self.connection = None;
        Ok(())
    }
}

/// The store bench's baseline on a fresh `raw_events` table (see [`super::baseline`]): the same
/// rows through one `INSERT … SELECT FROM UNNEST` per transaction, on its own runtime.
pub(super) fn open_raw(url: &StoreUrl, config: &StoreConfig) -> Result<Box<dyn RawInserts>, StoreError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| StoreError::Task(error.to_string()))?;
    let target = Target::new(url, config)?;
    let (client, insert) = runtime.block_on(async {
        let client = target.connect().await?;
        client
            .batch_execute(
                "DROP TABLE IF EXISTS raw_events;
                 CREATE TABLE raw_events (
                    seq          BIGINT PRIMARY KEY,
                    execution_id TEXT NOT NULL,
                    type         TEXT NOT NULL,
                    json         TEXT NOT NULL
                 )",
            )
            .await
            .map_err(db_error)?;
        let insert = client
            .prepare(
                "INSERT INTO raw_events (seq, execution_id, type, json)
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[])",
            )
            .await
            .map_err(db_error)?;
        Ok::<_, StoreError>((client, insert))
    })?;
    Ok(Box::new(RawPostgres {
        runtime,
        client,
        insert,
    }))
}

struct RawPostgres {
    runtime: tokio::runtime::Runtime,
    client: Client,
    insert: Statement,
}

impl RawInserts for RawPostgres {
    fn insert_batch(&mut self, rows: &[RawRow]) -> Result<(), StoreError> {
        let seq: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let ids: Vec<&str> = rows.iter().map(|r| r.execution_id.as_str()).collect();
        let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
        let json: Vec<&str> = rows.iter().map(|r| r.json.as_str()).collect();
        let (client, insert) = (&mut self.client, &self.insert);
        self.runtime.block_on(async move {
            let tx = client.transaction().await.map_err(db_error)?;
            tx.execute(insert, &[&seq, &ids, &kinds, &json])
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)
        })
    }
}

/// The TLS connector: a CA file's roots when one is given, otherwise encryption without
/// verification (libpq's `sslmode=require`).
mod tls {
    use std::path::Path;
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::WebPkiSupportedAlgorithms;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
    use tokio_postgres_rustls::MakeRustlsConnect;

    use crate::store::StoreError;

    pub(super) fn connector(ca_file: Option<&Path>) -> Result<MakeRustlsConnect, StoreError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(StoreError::database)?;
        let config = match ca_file {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let io = |error: rustls::pki_types::pem::Error| StoreError::Io {
                    path: path.display().to_string(),
                    source: error.into(),
                };
                for certificate in CertificateDer::pem_file_iter(path).map_err(io)? {
                    roots.add(certificate.map_err(io)?).map_err(StoreError::database)?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider.signature_verification_algorithms)))
                .with_no_client_auth(),
        };
        Ok(MakeRustlsConnect::new(config))
    }

    /// Accepts any server certificate (the handshake's signatures are still checked): what
    /// libpq's `sslmode=require` does, for servers with self-signed certificates.
    #[derive(Debug)]
    struct Unverified(WebPkiSupportedAlgorithms);

    impl ServerCertVerifier for Unverified {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_schemes()
        }
    }
}
