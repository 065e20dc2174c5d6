//! The single writer: one connection, one transaction per group commit.

use std::borrow::Cow;

use agentrack::ExecutionRecord;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use chrono::{DateTime, Utc};

use super::{GRANT_COLUMNS, TOKENS_CHANNEL, Target, db_error, info_from_row, insert_token_row};
use crate::auth::{Role, TokenGrant};
use crate::store::row::{self, EventColumns, ExecutionColumns, from_millis, millis, to_sql};
use crate::store::{
    Batch, Cutoff, KeyOp, KeyState, Purged, Revoked, RowUpdate, StoreError, StoreWriter, TakenTicket, Ticket,
};

/// The writer's connection and its prepared statements.
pub(super) struct Connection {
    client: Client,
    fence: Statement,
    insert_events: Statement,
    upsert_executions: Statement,
    insert_phases: Statement,
    drop_phases: Statement,
    reserve: Statement,
    notify: Statement,
}

/// The channel on which a commit tells the other nodes which shards' logs grew
/// (`SHARD:SEQ,…`); delivered by PostgreSQL when the transaction commits, never before.
pub(crate) const EVENTS_CHANNEL: &str = "agentrack_events";

/// Tells [`EVENTS_CHANNEL`] at commit.
const NOTIFY: &str = "SELECT pg_notify('agentrack_events', $1)";

impl Connection {
    pub(super) async fn open(target: &Target) -> Result<Self, StoreError> {
        let client = target.connect().await?;
        let (fence, insert_events, upsert_executions, insert_phases, drop_phases, reserve, notify) = tokio::try_join!(
            // Locks the shards' rows for the transaction: a node taking one over waits for this
            // commit, and a write after a takeover matches no row.
            client.prepare(
                "UPDATE shards AS s SET range_id = s.range_id
                 FROM UNNEST($1::int[], $2::bigint[]) AS f(shard_id, range_id)
                 WHERE s.shard_id = f.shard_id AND s.range_id = f.range_id",
            ),
            client.prepare(
                "INSERT INTO events
                    (shard_id, global_seq, execution_id, seq, tenant, user_id, thread_id, type, timestamp_ms, json,
                     range_id)
                 SELECT * FROM UNNEST($1::int[], $2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[],
                                      $7::text[], $8::text[], $9::bigint[], $10::text[], $11::bigint[])
                 ON CONFLICT (shard_id, global_seq) DO NOTHING",
            ),
            client.prepare(
                "INSERT INTO executions
                    (shard_id, execution_id, tenant, user_id, thread_id, agent_name, state, started_at_ms,
                     completed_at_ms, seq, replay_from, phase_count, record)
                 SELECT * FROM UNNEST($1::int[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[],
                                      $12::bigint[], $13::text[])
                 ON CONFLICT (execution_id) DO UPDATE SET
                    state = excluded.state, completed_at_ms = excluded.completed_at_ms, seq = excluded.seq,
                    replay_from = excluded.replay_from,
                    phase_count = GREATEST(executions.phase_count, excluded.phase_count), record = excluded.record",
            ),
            // The changes a row's tail moved past are written once: of those sent, only the ones
            // the stored row does not account for yet (the row is upserted after this, in the
            // same transaction).
            client.prepare(
                "INSERT INTO phases (execution_id, n, transition)
                 SELECT p.execution_id, p.n, p.transition
                 FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS p(execution_id, n, transition)
                 WHERE p.n >= COALESCE((SELECT e.phase_count FROM executions AS e WHERE e.execution_id = p.execution_id), 0)
                 ON CONFLICT (execution_id, n) DO NOTHING",
            ),
            client.prepare(
                "DELETE FROM phases AS p USING UNNEST($1::text[], $2::bigint[]) AS d(execution_id, below)
                 WHERE p.execution_id = d.execution_id AND p.n < d.below",
            ),
            client.prepare(
                "UPDATE shards AS s SET reserved = GREATEST(s.reserved, r.reserved)
                 FROM UNNEST($1::int[], $2::bigint[]) AS r(shard_id, reserved)
                 WHERE s.shard_id = r.shard_id",
            ),
            client.prepare(NOTIFY),
        )
        .map_err(db_error)?;
        Ok(Self {
            client,
            fence,
            insert_events,
            upsert_executions,
            insert_phases,
            drop_phases,
            reserve,
            notify,
        })
    }

    async fn commit(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        let records = self.rows(batches).await?;
        let rows: Vec<ExecutionColumns<'_>> = records
            .iter()
            .map(|(_, record, replay_from)| ExecutionColumns::of(record, *replay_from))
            .collect::<Result<_, _>>()?;
        let row_shards: Vec<i32> = records.iter().map(|(shard, _, _)| i32::from(*shard)).collect();
        let events: Vec<(i32, i64, EventColumns<'_>)> = batches
            .iter()
            .flat_map(|batch| {
                let fence = batch.fence.unwrap_or(0);
                batch
                    .events
                    .iter()
                    .map(move |event| (i32::from(batch.shard), fence, EventColumns::of(event)))
            })
            .collect();
        let events = EventArrays::of(&events);
        let executions = ExecutionArrays::of(&row_shards, &rows);
        let phases = PhaseArrays::of(&records, &rows)?;
        let fenced: Vec<&Batch> = batches.iter().filter(|batch| batch.fence.is_some()).collect();
        let fence_shards: Vec<i32> = fenced.iter().map(|batch| i32::from(batch.shard)).collect();
        let fence_ranges: Vec<i64> = fenced.iter().filter_map(|batch| batch.fence).collect();
        let reserving: Vec<&Batch> = batches.iter().filter(|batch| batch.reserved.is_some()).collect();
        let reserve_shards: Vec<i32> = reserving.iter().map(|batch| i32::from(batch.shard)).collect();
        let reserve_values: Vec<i64> = reserving
            .iter()
            .filter_map(|batch| batch.reserved.map(to_sql))
            .collect();
        let grown: String = batches
            .iter()
            .filter_map(|batch| {
                batch
                    .events
                    .last()
                    .map(|last| format!("{}:{}", batch.shard, last.event.global_seq))
            })
            .collect::<Vec<_>>()
            .join(",");
        let (event_params, row_params) = (events.params(), executions.params());
        let phase_params: [&(dyn ToSql + Sync); 3] = [&phases.execution_id, &phases.n, &phases.transition];
        let drop_params: [&(dyn ToSql + Sync); 2] = [&phases.dropping, &phases.below];
        let fence_params: [&(dyn ToSql + Sync); 2] = [&fence_shards, &fence_ranges];
        let reserve_params: [&(dyn ToSql + Sync); 2] = [&reserve_shards, &reserve_values];
        let notify_params: [&(dyn ToSql + Sync); 1] = [&grown];
        let tx = self.client.transaction().await.map_err(db_error)?;
        // Pipelined: the statements go out together (a future sends its statement when first
        // polled, and join! polls in order: the fence first) and are answered together; one with
        // nothing to write is not sent. The first error in order is the cause; the ones after it
        // only say the transaction was aborted.
        let (fence, events, added, dropped, executions, reserved, notified) = tokio::join!(
            unless_empty(&tx, fence_shards.is_empty(), &self.fence, &fence_params),
            unless_empty(&tx, events.is_empty(), &self.insert_events, &event_params),
            unless_empty(&tx, phases.n.is_empty(), &self.insert_phases, &phase_params),
            unless_empty(&tx, phases.below.is_empty(), &self.drop_phases, &drop_params),
            unless_empty(&tx, rows.is_empty(), &self.upsert_executions, &row_params),
            unless_empty(&tx, reserve_shards.is_empty(), &self.reserve, &reserve_params),
            unless_empty(&tx, grown.is_empty(), &self.notify, &notify_params),
        );
        let fence = fence.map_err(db_error)?;
        events
            .and(added)
            .and(dropped)
            .and(executions)
            .and(reserved)
            .and(notified)
            .map_err(db_error)?;
        if fence != fence_shards.len() as u64 {
            let lost = lost_shards(&tx, &fence_params).await?;
            tx.rollback().await.map_err(db_error)?;
            return Err(StoreError::Fenced { shards: lost });
        }
        tx.commit().await.map_err(db_error)
    }

    /// The records to write, with their shard and where a replay onto each starts: every
    /// snapshot, and for each execution that left memory, its stored record with the terminal
    /// event applied (nothing is ever replayed onto it).
    async fn rows<'a>(&self, batches: &'a [Batch]) -> Result<Vec<(u16, Cow<'a, ExecutionRecord>, u64)>, StoreError> {
        let mut rows = Vec::new();
        let mut finishing = Vec::new();
        for batch in batches {
            for update in &batch.rows {
                match update {
                    RowUpdate::Snapshot(record) => {
                        rows.push((batch.shard, Cow::Borrowed(&**record), batch.replay_from));
                    }
                    RowUpdate::Finish { execution_id, event } => {
                        finishing.push((batch.shard, execution_id.to_string(), event));
                    }
                }
            }
        }
        if finishing.is_empty() {
            return Ok(rows);
        }
        let ids: Vec<&str> = finishing.iter().map(|(_, id, _)| id.as_str()).collect();
        let stored = self
            .client
            .query(
                "SELECT execution_id, record FROM executions WHERE execution_id = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(db_error)?;
        let (mut finished_by, mut records) = (Vec::with_capacity(stored.len()), Vec::with_capacity(stored.len()));
        for row in stored {
            let id: &str = row.get(0);
            if let Some((shard, _, event)) = finishing.iter().find(|(_, wanted, _)| wanted == id) {
                records.push(row::decode(row.get(1))?);
                finished_by.push((*shard, *event));
            }
        }
        // Their whole kept history first: a row holds only its tail, and the row written back
        // must keep the true count of dropped changes (the cap's trimming of `phases` relies
        // on it).
        let spilled: Vec<String> = records
            .iter()
            .filter(|record| record.phase_history_dropped > 0)
            .map(|record| record.execution_id.to_string())
            .collect();
        if !spilled.is_empty() {
            let phases = self
                .client
                .query(
                    "SELECT execution_id, n, transition FROM phases WHERE execution_id = ANY($1)
                     ORDER BY execution_id, n",
                    &[&spilled],
                )
                .await
                .map_err(db_error)?;
            row::attach_phases(
                &mut records,
                phases.iter().map(|phase| (phase.get(0), phase.get(1), phase.get(2))),
            );
        }
        for ((shard, event), record) in finished_by.into_iter().zip(records) {
            if let Some(record) = row::finished(record, event) {
                rows.push((shard, Cow::Owned(record), 0));
            }
        }
        Ok(rows)
    }
}

/// Runs `statement` in `tx`, unless it has nothing to write (`empty`). Lazy, like the statement
/// it sends: it goes out when first polled.
async fn unless_empty(
    tx: &tokio_postgres::Transaction<'_>,
    empty: bool,
    statement: &Statement,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, tokio_postgres::Error> {
    if empty {
        Ok(0)
    } else {
        tx.execute(statement, params).await
    }
}

/// The shards among `fences` whose fencing number moved on.
async fn lost_shards(
    tx: &tokio_postgres::Transaction<'_>,
    fences: &[&(dyn ToSql + Sync); 2],
) -> Result<Vec<u16>, StoreError> {
    let rows = tx
        .query(
            "SELECT f.shard_id FROM UNNEST($1::int[], $2::bigint[]) AS f(shard_id, range_id)
             LEFT JOIN shards AS s ON s.shard_id = f.shard_id
             WHERE s.range_id IS DISTINCT FROM f.range_id",
            fences,
        )
        .await
        .map_err(db_error)?;
    Ok(rows
        .iter()
        .filter_map(|row| u16::try_from(row.get::<_, i32>(0)).ok())
        .collect())
}

/// A batch's events as the column arrays `UNNEST` takes.
struct EventArrays<'a> {
    shard_id: Vec<i32>,
    global_seq: Vec<i64>,
    execution_id: Vec<Option<&'a str>>,
    seq: Vec<Option<i64>>,
    tenant: Vec<Option<&'a str>>,
    user_id: Vec<Option<&'a str>>,
    thread_id: Vec<Option<&'a str>>,
    kind: Vec<&'a str>,
    timestamp_ms: Vec<i64>,
    json: Vec<&'a str>,
    range_id: Vec<i64>,
}

impl<'a> EventArrays<'a> {
    fn of(events: &'a [(i32, i64, EventColumns<'a>)]) -> Self {
        Self {
            shard_id: events.iter().map(|(shard, _, _)| *shard).collect(),
            range_id: events.iter().map(|(_, fence, _)| *fence).collect(),
            global_seq: events.iter().map(|(_, _, e)| e.global_seq).collect(),
            execution_id: events.iter().map(|(_, _, e)| e.execution_id.as_deref()).collect(),
            seq: events.iter().map(|(_, _, e)| e.seq).collect(),
            tenant: events.iter().map(|(_, _, e)| e.tenant).collect(),
            user_id: events.iter().map(|(_, _, e)| e.user_id).collect(),
            thread_id: events.iter().map(|(_, _, e)| e.thread_id).collect(),
            kind: events.iter().map(|(_, _, e)| e.kind).collect(),
            timestamp_ms: events.iter().map(|(_, _, e)| e.timestamp_ms).collect(),
            json: events.iter().map(|(_, _, e)| e.json).collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.global_seq.is_empty()
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.shard_id,
            &self.global_seq,
            &self.execution_id,
            &self.seq,
            &self.tenant,
            &self.user_id,
            &self.thread_id,
            &self.kind,
            &self.timestamp_ms,
            &self.json,
            &self.range_id,
        ]
    }
}

/// A batch's execution rows as the column arrays `UNNEST` takes.
struct ExecutionArrays<'a> {
    shard_id: &'a [i32],
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
    phase_count: Vec<i64>,
    record: Vec<&'a str>,
}

/// A batch's phase history rows as the column arrays `UNNEST` takes: of each row whose tail
/// starts after its first kept change, the kept changes before the tail (the statement leaves
/// out those already stored), and where the cap drops the oldest.
struct PhaseArrays {
    execution_id: Vec<String>,
    n: Vec<i64>,
    transition: Vec<String>,
    dropping: Vec<String>,
    below: Vec<i64>,
}

impl PhaseArrays {
    fn of(records: &[(u16, Cow<'_, ExecutionRecord>, u64)], rows: &[ExecutionColumns<'_>]) -> Result<Self, StoreError> {
        let mut arrays = Self {
            execution_id: Vec::new(),
            n: Vec::new(),
            transition: Vec::new(),
            dropping: Vec::new(),
            below: Vec::new(),
        };
        for ((_, record, _), columns) in records.iter().zip(rows) {
            let tail_from = row::from_sql(columns.phase_count);
            if tail_from > record.phase_history_dropped {
                for (n, transition) in row::spilled(record, record.phase_history_dropped, tail_from)? {
                    arrays.execution_id.push(columns.execution_id.clone());
                    arrays.n.push(n);
                    arrays.transition.push(transition);
                }
            }
            if let Some(below) = row::phases_dropped_below(record) {
                arrays.dropping.push(columns.execution_id.clone());
                arrays.below.push(below);
            }
        }
        Ok(arrays)
    }
}

impl<'a> ExecutionArrays<'a> {
    fn of(shard_id: &'a [i32], rows: &'a [ExecutionColumns<'a>]) -> Self {
        Self {
            shard_id,
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
            phase_count: rows.iter().map(|r| r.phase_count).collect(),
            record: rows.iter().map(|r| r.record.as_str()).collect(),
        }
    }

    fn params(&self) -> [&(dyn ToSql + Sync); 13] {
        [
            &self.shard_id,
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
            &self.phase_count,
            &self.record,
        ]
    }
}

/// The single writer: runs on the pipeline's thread and drives its connection on a runtime of
/// its own, in that thread — a round trip then costs no hop between threads, which at one
/// commit per call is most of the commit's time. A failed connection is dropped and made anew
/// on the next call.
pub(super) struct PgWriter {
    runtime: Option<tokio::runtime::Runtime>,
    target: Target,
    connection: Option<Connection>,
}

impl PgWriter {
    /// Connects (blocking).
    pub(super) fn open(target: Target) -> Result<Self, StoreError> {
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
            // A fenced write is a valid answer on a healthy connection; anything else may have
            // left the connection in doubt.
            if result
                .as_ref()
                .is_err_and(|error| !matches!(error, StoreError::Fenced { .. }))
            {
                *slot = None;
            }
            result
        })
    }
}

impl StoreWriter for PgWriter {
    fn commit(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        self.with(async |connection| connection.commit(batches).await)
    }

    fn purge(&mut self, cutoff: &Cutoff) -> Result<Purged, StoreError> {
        let (events_before, finished_before) = (millis(cutoff.events_before), millis(cutoff.finished_before));
        self.with(async move |connection| {
            let tx = connection.client.transaction().await.map_err(db_error)?;
            // Retention of the log, shard by shard: events older than the cut-off, found by walking
            // each shard's log from its start (no index on time is needed).
            let shards: Vec<i32> = cutoff.shards.iter().map(|&shard| i32::from(shard)).collect();
            let events = tx
                .execute(
                    "DELETE FROM events e USING (
                        SELECT s.shard_id, COALESCE(
                            (SELECT global_seq FROM events WHERE shard_id = s.shard_id AND timestamp_ms >= $1
                             ORDER BY global_seq LIMIT 1),
                            (SELECT COALESCE(MAX(global_seq), 0) + 1 FROM events WHERE shard_id = s.shard_id)
                        ) AS keep_from
                        FROM unnest($2::int[]) AS s(shard_id)) k
                     WHERE e.shard_id = k.shard_id AND e.global_seq < k.keep_from",
                    &[&events_before, &shards],
                )
                .await
                .map_err(db_error)?;
            tx.execute(
                "DELETE FROM phases WHERE execution_id IN (SELECT execution_id FROM executions
                     WHERE completed_at_ms IS NOT NULL AND completed_at_ms < $1 AND shard_id = ANY($2))",
                &[&finished_before, &shards],
            )
            .await
            .map_err(db_error)?;
            let executions = tx
                .execute(
                    "DELETE FROM executions
                     WHERE completed_at_ms IS NOT NULL AND completed_at_ms < $1 AND shard_id = ANY($2)",
                    &[&finished_before, &shards],
                )
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(Purged { executions, events })
        })
    }

    fn insert_token(&mut self, hash: &str, grant: &TokenGrant) -> Result<(), StoreError> {
        self.with(async |connection| insert_token_row(&connection.client, hash, grant).await)
    }

    fn revoke_token(&mut self, id: &str, at: DateTime<Utc>) -> Result<Revoked, StoreError> {
        self.with(async move |connection| {
            let tx = connection.client.transaction().await.map_err(db_error)?;
            // Every node has its own writer: the valid admin tokens' rows are locked, so that two
            // nodes revoking the last two admin tokens at once cannot both succeed.
            let admins = tx
                .query(
                    "SELECT token_id FROM tokens WHERE role = 'admin' AND revoked_at_ms IS NULL
                     AND (expires_at_ms IS NULL OR expires_at_ms > $1) ORDER BY token_id FOR UPDATE",
                    &[&millis(at)],
                )
                .await
                .map_err(db_error)?;
            let row = tx
                .query_opt(
                    &format!("SELECT {GRANT_COLUMNS}, token_hash FROM tokens WHERE token_id = $1 FOR UPDATE"),
                    &[&id],
                )
                .await
                .map_err(db_error)?;
            let Some(row) = row else {
                return Ok(Revoked::Unknown);
            };
            let mut info = info_from_row(&row)?;
            let hash: String = row.get(8);
            if info.revoked_at.is_none() {
                let valid_admin = info.grant.role == Role::Admin && !info.grant.expired(at);
                if valid_admin && admins.iter().all(|admin| admin.get::<_, String>(0) == id) {
                    return Ok(Revoked::LastAdmin);
                }
                tx.execute(
                    "UPDATE tokens SET revoked_at_ms = $1 WHERE token_id = $2",
                    &[&millis(at), &id],
                )
                .await
                .map_err(db_error)?;
                info.revoked_at = Some(from_millis(millis(at)));
            }
            // Delivered to every node when the revocation commits, and only then.
            tx.execute("SELECT pg_notify($1, $2)", &[&TOKENS_CHANNEL, &hash])
                .await
                .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(Revoked::Done { info, hash })
        })
    }

    fn insert_ticket(&mut self, ticket: &Ticket) -> Result<(), StoreError> {
        self.with(async move |connection| {
            // Tickets live seconds: the table holds only those of the last moments.
            connection
                .client
                .execute("DELETE FROM tickets WHERE expires_at_ms <= $1", &[&millis(Utc::now())])
                .await
                .map_err(db_error)?;
            connection
                .client
                .execute(
                    "INSERT INTO tickets (ticket_hash, token_hash, expires_at_ms) VALUES ($1, $2, $3)",
                    &[&ticket.hash, &ticket.token_hash, &millis(ticket.expires_at)],
                )
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn take_ticket(&mut self, hash: &str) -> Result<Option<TakenTicket>, StoreError> {
        self.with(async move |connection| {
            let row = connection
                .client
                .query_opt(
                    "DELETE FROM tickets WHERE ticket_hash = $1 RETURNING token_hash, expires_at_ms",
                    &[&hash],
                )
                .await
                .map_err(db_error)?;
            Ok(row.map(|row| (row.get(0), from_millis(row.get(1)))))
        })
    }

    fn idempotency(&mut self, op: &KeyOp) -> Result<KeyState, StoreError> {
        self.with(async |connection| {
            let client = &connection.client;
            let changed = match op {
                KeyOp::Reserve {
                    scope,
                    key,
                    fingerprint,
                    at,
                } => {
                    let inserted = client
                        .execute(
                            "INSERT INTO idempotency_keys (scope, key, fingerprint, created_at_ms)
                             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                            &[scope, key, fingerprint, &millis(*at)],
                        )
                        .await
                        .map_err(db_error)?;
                    if inserted == 1 {
                        return Ok(KeyState::Reserved);
                    }
                    let row = client
                        .query_one(
                            "SELECT fingerprint, status, body FROM idempotency_keys WHERE scope = $1 AND key = $2",
                            &[scope, key],
                        )
                        .await
                        .map_err(db_error)?;
                    let status: Option<i32> = row.get(1);
                    return Ok(KeyState::stored(row.get(0), status.map(i64::from), row.get(2)));
                }
                KeyOp::Complete {
                    scope,
                    key,
                    status,
                    body,
                } => client
                    .execute(
                        "UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND key = $2",
                        &[scope, key, &i32::from(*status), body],
                    )
                    .await
                    .map_err(db_error)?,
                KeyOp::Release { scope, key } => client
                    .execute(
                        "DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL",
                        &[scope, key],
                    )
                    .await
                    .map_err(db_error)?,
                KeyOp::Expire { before } => client
                    .execute(
                        "DELETE FROM idempotency_keys WHERE created_at_ms < $1",
                        &[&millis(*before)],
                    )
                    .await
                    .map_err(db_error)?,
            };
            Ok(KeyState::Changed(changed))
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
