//! The store bench's raw-insert baseline on PostgreSQL.

use tokio_postgres::{Client, Statement};

use super::{Target, db_error};
use crate::store::baseline::{RawInserts, RawRow};
use crate::store::{StoreConfig, StoreError, StoreUrl};

/// The store bench's baseline on a fresh `raw_events` table (see [`super::baseline`]): the same
/// rows through one `INSERT … SELECT FROM UNNEST` per transaction, on its own runtime.
pub(in crate::store) fn open_raw(url: &StoreUrl, config: &StoreConfig) -> Result<Box<dyn RawInserts>, StoreError> {
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
