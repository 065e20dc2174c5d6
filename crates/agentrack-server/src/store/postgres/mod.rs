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
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::row::{self, from_millis, from_sql, millis, to_sql};
use super::{
    ClusterStore, EventQuery, ListQuery, Loaded, Page, ShardId, StateCount, Store, StoreConfig, StoreError,
    StoreFuture, StoreUrl, StoreWriter, StoredEvent,
};
use super::{replay, unreadable};
use crate::auth::{Role, TokenGrant, TokenInfo, token_id};

mod baseline;
mod cluster;
mod schema;
mod tls;
mod writer;

pub(super) use baseline::open_raw;

/// How long connecting may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a session may sit in an open transaction before PostgreSQL ends it (and releases
/// its locks). A node's transactions are pipelined and committed at once, so only a node that
/// was paused or cut off mid-transaction reaches it — and then the locks it holds on shard rows
/// would otherwise block the takeover of those shards for as long as it stays paused.
pub(super) const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(1);

/// How long a read waits for a pooled connection (or to make one) during an outage.
const POOL_TIMEOUT: Duration = Duration::from_secs(5);

fn db_error(error: tokio_postgres::Error) -> StoreError {
    StoreError::database(error)
}

/// Whether the store holds an admin token.
const ADMIN_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM tokens WHERE role = 'admin')";

/// The channel on which every node hears of a token made or revoked (its hash), to forget what
/// its cache holds of it.
pub(crate) const TOKENS_CHANNEL: &str = "agentrack_tokens";

/// The columns [`grant_from_row`] reads, then those [`info_from_row`] adds.
const GRANT_COLUMNS: &str = "role, tenant, user_id, label, created_at_ms, expires_at_ms, token_id, revoked_at_ms";

/// Stores a token's row (by the writer, or by the first node of a cluster under its lock), and
/// tells the other nodes (a refusal of it they cached is forgotten).
async fn insert_token_row(
    client: &impl tokio_postgres::GenericClient,
    hash: &str,
    grant: &TokenGrant,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO tokens (token_hash, role, tenant, user_id, label, created_at_ms, expires_at_ms, token_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &hash,
                &grant.role.as_str(),
                &grant.tenant,
                &grant.user_id,
                &grant.label,
                &millis(grant.created_at),
                &grant.expires_at.map(millis),
                &token_id(hash),
            ],
        )
        .await
        .map_err(db_error)?;
    client
        .execute("SELECT pg_notify($1, $2)", &[&TOKENS_CHANNEL, &hash])
        .await
        .map_err(db_error)?;
    Ok(())
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
        // A node that stops mid-transaction (paused, or cut off) must not hold the shards' row
        // locks past a lease: the server ends such a session, which no healthy node leaves
        // idle for more than a moment. See `IDLE_IN_TRANSACTION`.
        let options = format!(
            "{} -c idle_in_transaction_session_timeout={}",
            config.get_options().unwrap_or_default(),
            IDLE_IN_TRANSACTION.as_millis()
        );
        config.options(options.trim());
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
        let shards = schema::migrate(&mut client, config.shards).await?;
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
        Ok(Arc::new(PgStore { pool, target, shards }) as Arc<dyn Store>)
    })
}

/// The PostgreSQL store: a pool for reads; the writer connects on its own.
struct PgStore {
    pool: Pool,
    target: Target,
    /// How many shards it has.
    shards: u16,
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
        expires_at: row.get::<_, Option<i64>>(5).map(from_millis),
    })
}

fn info_from_row(row: &tokio_postgres::Row) -> Result<TokenInfo, StoreError> {
    Ok(TokenInfo {
        grant: grant_from_row(row)?,
        id: row.get(6),
        revoked_at: row.get::<_, Option<i64>>(7).map(from_millis),
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

/// A stored phase change as `row::attach_phases` takes it.
fn phase_row(row: &tokio_postgres::Row) -> (&str, i64, &str) {
    (row.get(0), row.get(1), row.get(2))
}

/// Gives `records`, read from their rows (which hold the recent tail of each history), the
/// kept changes before that tail from `phases` (see `row::attach_phases`).
async fn with_phases(client: &deadpool_postgres::Object, records: &mut [ExecutionRecord]) -> Result<(), StoreError> {
    // A row whose tail starts at the execution's first change (as decoded, its
    // `phase_history_dropped` is where the tail starts) has nothing in `phases`.
    let ids: Vec<String> = records
        .iter()
        .filter(|record| record.phase_history_dropped > 0)
        .map(|record| record.execution_id.to_string())
        .collect();
    if ids.is_empty() {
        return Ok(());
    }
    let statement = client
        .prepare_cached(
            "SELECT execution_id, n, transition FROM phases WHERE execution_id = ANY($1) ORDER BY execution_id, n",
        )
        .await
        .map_err(db_error)?;
    let phases = client.query(&statement, &[&ids]).await.map_err(db_error)?;
    row::attach_phases(records, phases.iter().map(phase_row));
    Ok(())
}

async fn load(client: &Client, shard: ShardId, finished_since: DateTime<Utc>) -> Result<Loaded, StoreError> {
    let shard = i32::from(shard);
    let rows = client
        .query(
            "SELECT execution_id, record FROM executions
             WHERE shard_id = $1 AND (completed_at_ms IS NULL OR completed_at_ms >= $2) ORDER BY execution_id",
            &[&shard, &millis(finished_since)],
        )
        .await
        .map_err(db_error)?;
    let mut records = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.get(0);
        match row::decode(row.get(1)) {
            Ok(record) => records.push(record),
            Err(error) => unreadable::skip(&id, &error),
        }
    }
    let phases = client
        .query(
            "SELECT p.execution_id, p.n, p.transition FROM phases AS p JOIN executions AS e USING (execution_id)
             WHERE e.shard_id = $1 AND (e.completed_at_ms IS NULL OR e.completed_at_ms >= $2)
             ORDER BY p.execution_id, p.n",
            &[&shard, &millis(finished_since)],
        )
        .await
        .map_err(db_error)?;
    row::attach_phases(&mut records, phases.iter().map(phase_row));
    // Alive rows may lag their log by replayable events.
    let tail = client
        .query(
            "SELECT json FROM events WHERE shard_id = $1 AND global_seq >
                (SELECT COALESCE(MIN(replay_from), 0) FROM executions WHERE shard_id = $1 AND completed_at_ms IS NULL)
             ORDER BY global_seq",
            &[&shard],
        )
        .await
        .map_err(db_error)?;
    let replayed = replay::catch_up(&mut records, tail.iter().map(|row| row.get::<_, &str>(0)));
    let high_water: i64 = client
        .query_one(
            "SELECT GREATEST(
                (SELECT COALESCE(MAX(global_seq), 0) FROM events WHERE shard_id = $1),
                (SELECT COALESCE(reserved, 0) FROM shards WHERE shard_id = $1))",
            &[&shard],
        )
        .await
        .map_err(db_error)?
        .get(0);
    let counts = client
        .query(
            "SELECT tenant, user_id, state, COUNT(*) FROM executions WHERE shard_id = $1 GROUP BY 1, 2, 3",
            &[&shard],
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
        high_water: from_sql(high_water),
        replayed,
    })
}

impl Store for PgStore {
    fn shard_count(&self) -> u16 {
        self.shards
    }

    fn cluster(&self) -> Option<&dyn ClusterStore> {
        Some(self)
    }

    fn load(&self, shard: ShardId, finished_since: DateTime<Utc>) -> StoreFuture<'_, Loaded> {
        Box::pin(async move {
            let client = self.client().await?;
            load(&client, shard, finished_since).await
        })
    }

    fn writer(&self) -> StoreFuture<'_, Box<dyn StoreWriter>> {
        let target = self.target.clone();
        Box::pin(async move {
            let writer = tokio::task::spawn_blocking(move || writer::PgWriter::open(target))
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
            with_phases(&client, std::slice::from_mut(&mut record)).await?;
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
            let mut sql = Query::new("SELECT execution_id, record FROM executions WHERE TRUE");
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
            let mut page = unreadable::page(
                rows.iter().map(|row| (row.get::<_, &str>(0), row.get::<_, &str>(1))),
                query.limit,
            );
            with_phases(&client, &mut page.records).await?;
            Ok(page)
        })
    }

    fn events(&self, query: EventQuery) -> StoreFuture<'_, Vec<StoredEvent>> {
        Box::pin(async move {
            let shards: Vec<i32> = query.ranges.iter().map(|r| i32::from(r.shard)).collect();
            let after: Vec<i64> = query.ranges.iter().map(|r| to_sql(r.after)).collect();
            let up_to: Vec<i64> = query.ranges.iter().map(|r| to_sql(r.up_to)).collect();
            let mut sql = Query::new(
                "SELECT e.shard_id, e.global_seq, e.json
                 FROM UNNEST($1::int[], $2::bigint[], $3::bigint[]) AS r(shard_id, after, up_to)
                 JOIN events AS e ON e.shard_id = r.shard_id AND e.global_seq > r.after AND e.global_seq <= r.up_to
                 WHERE TRUE",
            );
            sql.values.extend([
                Box::new(shards) as Box<dyn ToSql + Sync + Send>,
                Box::new(after),
                Box::new(up_to),
            ]);
            for (column, value) in [
                ("tenant", query.tenant),
                ("user_id", query.user_id),
                ("thread_id", query.thread_id),
                ("execution_id", query.execution_id.map(|id| id.to_string())),
            ] {
                if let Some(value) = value {
                    sql.push(&format!(" AND e.{column} = $"), value);
                }
            }
            sql.push(
                " ORDER BY e.shard_id, e.global_seq LIMIT $",
                i64::try_from(query.limit).unwrap_or(i64::MAX),
            );
            let client = self.client().await?;
            let statement = client.prepare_cached(&sql.sql).await.map_err(db_error)?;
            let rows = client.query(&statement, &sql.params()).await.map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|row| StoredEvent {
                    shard: u16::try_from(row.get::<_, i32>(0)).unwrap_or(0),
                    global_seq: from_sql(row.get(1)),
                    json: row.get(2),
                })
                .collect())
        })
    }

    fn has_admin_token(&self) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client.query_one(ADMIN_EXISTS, &[]).await.map_err(db_error)?;
            Ok(row.get(0))
        })
    }

    fn token(&self, hash: String) -> StoreFuture<'_, Option<TokenGrant>> {
        Box::pin(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {GRANT_COLUMNS} FROM tokens WHERE token_hash = $1 AND revoked_at_ms IS NULL"
                ))
                .await
                .map_err(db_error)?;
            let row = client.query_opt(&statement, &[&hash]).await.map_err(db_error)?;
            row.as_ref().map(grant_from_row).transpose()
        })
    }

    fn tokens(&self) -> StoreFuture<'_, Vec<TokenInfo>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!("SELECT {GRANT_COLUMNS} FROM tokens ORDER BY created_at_ms, token_id"),
                    &[],
                )
                .await
                .map_err(db_error)?;
            rows.iter().map(info_from_row).collect()
        })
    }
}
