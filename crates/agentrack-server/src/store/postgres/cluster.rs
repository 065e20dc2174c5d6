//! The cluster operations on PostgreSQL: nodes, shard leases with fencing numbers, moves, and
//! `LISTEN` for the log's growth. Every lease compares against the database's clock.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use super::writer::EVENTS_CHANNEL;
use super::{ADMIN_EXISTS, PgStore, TOKENS_CHANNEL, db_error, insert_token_row};
use crate::auth::TokenGrant;
use crate::store::row::{from_sql, to_sql};
use crate::store::{ClusterStore, NodeRow, ShardId, ShardMove, ShardRow, StoreFuture, StoredEvent, Taken};

/// The database's clock in ms, in SQL.
const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

/// How long shard moves are remembered.
const MOVES_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// The advisory lock of the first admin token's creation; any number, the same on every node.
const BOOTSTRAP_LOCK: i64 = 0x6167_656e_7472_6b32;

fn ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn shard(value: i32) -> ShardId {
    u16::try_from(value).unwrap_or(0)
}

impl ClusterStore for PgStore {
    fn now_ms(&self) -> StoreFuture<'_, i64> {
        Box::pin(async move {
            let client = self.client().await?;
            let row = client
                .query_one(&format!("SELECT {NOW_MS}"), &[])
                .await
                .map_err(db_error)?;
            Ok(row.get(0))
        })
    }

    fn insert_first_admin(&self, hash: &str, grant: &TokenGrant) -> StoreFuture<'_, bool> {
        let (hash, grant) = (hash.to_owned(), grant.clone());
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&BOOTSTRAP_LOCK])
                .await
                .map_err(db_error)?;
            let exists: bool = tx.query_one(ADMIN_EXISTS, &[]).await.map_err(db_error)?.get(0);
            if exists {
                return Ok(false);
            }
            insert_token_row(&*tx, &hash, &grant).await?;
            tx.commit().await.map_err(db_error)?;
            Ok(true)
        })
    }

    fn heartbeat_node(&self, node_id: &str, url: &str) -> StoreFuture<'_, ()> {
        let (node_id, url) = (node_id.to_owned(), url.to_owned());
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute(
                    &format!(
                        "INSERT INTO nodes (node_id, url, started_ms, seen_ms) VALUES ($1, $2, {NOW_MS}, {NOW_MS})
                         ON CONFLICT (node_id) DO UPDATE SET url = excluded.url, seen_ms = excluded.seen_ms"
                    ),
                    &[&node_id, &url],
                )
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn remove_node(&self, node_id: &str) -> StoreFuture<'_, ()> {
        let node_id = node_id.to_owned();
        Box::pin(async move {
            let client = self.client().await?;
            client
                .execute("DELETE FROM nodes WHERE node_id = $1", &[&node_id])
                .await
                .map_err(db_error)?;
            Ok(())
        })
    }

    fn nodes(&self) -> StoreFuture<'_, Vec<NodeRow>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT node_id, url, started_ms, seen_ms FROM nodes ORDER BY started_ms, node_id",
                    &[],
                )
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|row| NodeRow {
                    node_id: row.get(0),
                    url: row.get(1),
                    started_ms: row.get(2),
                    seen_ms: row.get(3),
                })
                .collect())
        })
    }

    fn shards(&self) -> StoreFuture<'_, Vec<ShardRow>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT shard_id, owner, range_id, lease_until_ms FROM shards ORDER BY shard_id",
                    &[],
                )
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|row| ShardRow {
                    shard: shard(row.get(0)),
                    owner: row.get(1),
                    range_id: row.get(2),
                    lease_until_ms: row.get(3),
                })
                .collect())
        })
    }

    fn take(&self, shard_id: ShardId, node_id: &str, ttl: Duration) -> StoreFuture<'_, Option<Taken>> {
        let node_id = node_id.to_owned();
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            // Waits for a commit in flight, not for ever: a stuck owner's session is ended by
            // the server (see `IDLE_IN_TRANSACTION`), and the next round tries again.
            tx.batch_execute("SET LOCAL lock_timeout = '2s'")
                .await
                .map_err(db_error)?;
            let key = i32::from(shard_id);
            // Locked for the transaction: waits for a commit of the owner in flight, so that commit
            // lands before this node reads the shard.
            let current = tx
                .query_one(
                    &format!("SELECT owner, lease_until_ms < {NOW_MS} FROM shards WHERE shard_id = $1 FOR UPDATE"),
                    &[&key],
                )
                .await
                .map_err(db_error)?;
            let owner: Option<String> = current.get(0);
            let expired: bool = current.get(1);
            // A node restarted on its data directory takes back its own shards at once (the new
            // fencing number shuts out anything its previous run might still write).
            if owner.as_ref().is_some_and(|owner| owner != &node_id) && !expired {
                return Ok(None);
            }
            let range_id: i64 = tx
                .query_one(
                    &format!(
                        "UPDATE shards SET owner = $2, range_id = range_id + 1, lease_until_ms = {NOW_MS} + $3
                         WHERE shard_id = $1 RETURNING range_id"
                    ),
                    &[&key, &node_id, &ms(ttl)],
                )
                .await
                .map_err(db_error)?
                .get(0);
            let reason = match &owner {
                None => "free",
                Some(owner) if owner == &node_id && !expired => "restarted",
                Some(_) => "expired",
            };
            tx.execute(
                &format!(
                    "INSERT INTO shard_moves (at_ms, shard_id, from_node, to_node, reason)
                     VALUES ({NOW_MS}, $1, $2, $3, $4)"
                ),
                &[&key, &owner, &node_id, &reason],
            )
            .await
            .map_err(db_error)?;
            tx.execute(
                &format!("DELETE FROM shard_moves WHERE at_ms < {NOW_MS} - $1"),
                &[&MOVES_KEPT_MS],
            )
            .await
            .map_err(db_error)?;
            tx.commit().await.map_err(db_error)?;
            Ok(Some(Taken {
                range_id,
                from_node: owner,
            }))
        })
    }

    fn renew(&self, node_id: &str, leases: &[(ShardId, i64)], ttl: Duration) -> StoreFuture<'_, Vec<ShardId>> {
        let node_id = node_id.to_owned();
        let shards: Vec<i32> = leases.iter().map(|(s, _)| i32::from(*s)).collect();
        let ranges: Vec<i64> = leases.iter().map(|(_, r)| *r).collect();
        Box::pin(async move {
            if shards.is_empty() {
                return Ok(Vec::new());
            }
            let client = self.client().await?;
            let rows = client
                .query(
                    &format!(
                        "UPDATE shards AS s SET lease_until_ms = {NOW_MS} + $2
                         FROM UNNEST($3::int[], $4::bigint[]) AS l(shard_id, range_id)
                         WHERE s.shard_id = l.shard_id AND s.range_id = l.range_id AND s.owner = $1
                         RETURNING s.shard_id"
                    ),
                    &[&node_id, &ms(ttl), &shards, &ranges],
                )
                .await
                .map_err(db_error)?;
            Ok(rows.iter().map(|row| shard(row.get(0))).collect())
        })
    }

    fn release(&self, shard_id: ShardId, node_id: &str, range_id: i64) -> StoreFuture<'_, ()> {
        let node_id = node_id.to_owned();
        Box::pin(async move {
            let mut client = self.client().await?;
            let tx = client.transaction().await.map_err(db_error)?;
            let key = i32::from(shard_id);
            let released = tx
                .execute(
                    "UPDATE shards SET owner = NULL, lease_until_ms = 0
                     WHERE shard_id = $1 AND owner = $2 AND range_id = $3",
                    &[&key, &node_id, &range_id],
                )
                .await
                .map_err(db_error)?;
            if released > 0 {
                tx.execute(
                    &format!(
                        "INSERT INTO shard_moves (at_ms, shard_id, from_node, to_node, reason)
                         VALUES ({NOW_MS}, $1, $2, NULL, 'released')"
                    ),
                    &[&key, &node_id],
                )
                .await
                .map_err(db_error)?;
            }
            tx.commit().await.map_err(db_error)
        })
    }

    fn moves(&self, limit: usize) -> StoreFuture<'_, Vec<ShardMove>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT at_ms, shard_id, from_node, to_node, reason FROM shard_moves
                     ORDER BY at_ms DESC LIMIT $1",
                    &[&i64::try_from(limit).unwrap_or(i64::MAX)],
                )
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|row| ShardMove {
                    at_ms: row.get(0),
                    shard: shard(row.get(1)),
                    from_node: row.get(2),
                    to_node: row.get(3),
                    reason: row.get(4),
                })
                .collect())
        })
    }

    fn log_heads(&self) -> StoreFuture<'_, Vec<(ShardId, u64)>> {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT s.shard_id,
                        (SELECT COALESCE(MAX(e.global_seq), 0) FROM events AS e WHERE e.shard_id = s.shard_id)
                     FROM shards AS s ORDER BY s.shard_id",
                    &[],
                )
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|row| (shard(row.get(0)), from_sql(row.get(1))))
                .collect())
        })
    }

    fn events_after(&self, shard_id: ShardId, after: u64, limit: usize) -> StoreFuture<'_, Vec<StoredEvent>> {
        Box::pin(async move {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT global_seq, json FROM events WHERE shard_id = $1 AND global_seq > $2
                     ORDER BY global_seq LIMIT $3",
                )
                .await
                .map_err(db_error)?;
            let rows = client
                .query(
                    &statement,
                    &[
                        &i32::from(shard_id),
                        &to_sql(after),
                        &i64::try_from(limit).unwrap_or(i64::MAX),
                    ],
                )
                .await
                .map_err(db_error)?;
            Ok(rows
                .iter()
                .map(|row| StoredEvent {
                    shard: shard_id,
                    global_seq: from_sql(row.get(0)),
                    json: row.get(1),
                })
                .collect())
        })
    }

    fn listen(&self) -> StoreFuture<'_, mpsc::UnboundedReceiver<(ShardId, u64)>> {
        Box::pin(async move {
            let (sender, receiver) = mpsc::unbounded_channel();
            self.listen_on(EVENTS_CHANNEL, move |payload| {
                parse_growth(payload).all(|growth| sender.send(growth).is_ok())
            })
            .await?;
            Ok(receiver)
        })
    }

    fn listen_tokens(&self) -> StoreFuture<'_, mpsc::UnboundedReceiver<String>> {
        Box::pin(async move {
            let (sender, receiver) = mpsc::unbounded_channel();
            self.listen_on(TOKENS_CHANNEL, move |payload| sender.send(payload.to_owned()).is_ok())
                .await?;
            Ok(receiver)
        })
    }
}

impl PgStore {
    /// `LISTEN channel` on a connection of its own, handing each notification's payload to
    /// `deliver` until it returns false or the connection ends.
    async fn listen_on(
        &self,
        channel: &str,
        mut deliver: impl FnMut(&str) -> bool + Send + 'static,
    ) -> Result<(), crate::store::StoreError> {
        let (client, mut connection) = self
            .target
            .config
            .connect(self.target.tls.clone())
            .await
            .map_err(db_error)?;
        let (ended, end) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ended = ended;
            let mut messages = std::pin::pin!(futures_util::stream::poll_fn(move |cx| connection.poll_message(cx)));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(note)) => {
                        if !deliver(note.payload()) {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(%error, "the listening connection ended");
                        return;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {channel}"))
            .await
            .map_err(db_error)?;
        // The connection lives as long as its client: keep it until the reading task ends.
        tokio::spawn(async move {
            let _ = end.await;
            drop(client);
        });
        Ok(())
    }
}

/// `SHARD:SEQ,SHARD:SEQ` → pairs; anything malformed is skipped.
fn parse_growth(payload: &str) -> impl Iterator<Item = (ShardId, u64)> + '_ {
    payload.split(',').filter_map(|pair| {
        let (shard, seq) = pair.split_once(':')?;
        Some((shard.trim().parse().ok()?, seq.trim().parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::parse_growth;

    #[test]
    fn growth_notifications_are_read_leniently() {
        let pairs: Vec<_> = parse_growth("0:12,3:7,bad,4:x").collect();
        assert_eq!(pairs, [(0, 12), (3, 7)]);
    }
}
