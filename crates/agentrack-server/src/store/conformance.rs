//! The same checks against every backend: what the pipeline and the API rely on a store for.
//!
//! PostgreSQL comes from `AGENTRACK_TEST_PG_URL` (`scripts/test` starts a throwaway cluster and
//! sets it); each test gets a fresh database. Without it the PostgreSQL tests fail, saying how
//! to get one.

use std::sync::Arc;

use agentrack::{Change, ExecutionId, ExecutionState, NewExecution, Phase, Tracker};
use chrono::Utc;

use super::{Batch, EventQuery, ListQuery, RowUpdate, Store, StoreConfig, StoreError, StoreUrl, StoreWriter, open};
use crate::auth::{Role, TokenGrant};
use crate::serialized_event::SerializedEvent;

/// The test server's URL, or a failure naming how to get one.
fn admin_url() -> String {
    std::env::var("AGENTRACK_TEST_PG_URL").unwrap_or_else(|_| {
        panic!(
            "AGENTRACK_TEST_PG_URL is not set: run scripts/test (it starts a throwaway PostgreSQL cluster; \
             apt-get install postgresql) or export the URL of a server, e.g. postgres://postgres@127.0.0.1:5432/postgres"
        )
    })
}

async fn admin() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// A fresh database on the test server; its URL.
pub(super) async fn fresh_postgres() -> String {
    let name = format!("agentrack_unit_{}", uuid::Uuid::new_v4().simple());
    admin()
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = StoreUrl::parse(&admin_url()).unwrap();
    let rest = url.rest();
    let authority = rest.split('/').next().unwrap_or(rest);
    format!("{}://{authority}/{name}", url.scheme())
}

fn config(url: String) -> StoreConfig {
    StoreConfig {
        url: Some(url),
        ..StoreConfig::default()
    }
}

fn sqlite(dir: &tempfile::TempDir) -> StoreConfig {
    config(format!(
        "sqlite://{}",
        dir.path().join("nested").join("agentrack.db").display()
    ))
}

fn batch_of(tracker: &Tracker, changes: &[Change], reserved: u64) -> Batch {
    let events = changes
        .iter()
        .flat_map(|change| change.events.iter())
        .map(|event| Arc::new(SerializedEvent::new(Arc::clone(event))))
        .collect();
    let mut ids: Vec<ExecutionId> = changes.iter().map(|c| c.execution_id).collect();
    ids.sort();
    ids.dedup();
    let rows = ids
        .into_iter()
        .map(|id| RowUpdate::Snapshot(Box::new(tracker.get(id).unwrap())))
        .collect();
    Batch {
        shard: 0,
        fence: None,
        events,
        rows,
        reserved: Some(reserved),
        replay_from: tracker.last_seq(),
    }
}

/// Commits the terminal event of `finished` as for an execution that left memory before its
/// row was written: applied to the stored row.
async fn finish_out_of_memory(writer: &mut Option<Box<dyn StoreWriter>>, finished: &Change) {
    let terminal = Arc::clone(finished.events.last().unwrap());
    let batch = Batch {
        shard: 0,
        fence: None,
        events: vec![Arc::new(SerializedEvent::new(Arc::clone(&terminal)))],
        rows: vec![RowUpdate::Finish {
            execution_id: finished.execution_id,
            event: terminal,
        }],
        reserved: None,
        replay_from: 0,
    };
    on_writer(writer, move |w| w.commit(std::slice::from_ref(&batch)))
        .await
        .unwrap();
}

/// Runs a blocking writer call off the runtime (the PostgreSQL writer drives its connection
/// on the runtime it was opened on).
async fn on_writer<T: Send + 'static>(
    writer: &mut Option<Box<dyn StoreWriter>>,
    call: impl FnOnce(&mut dyn StoreWriter) -> T + Send + 'static,
) -> T {
    let mut taken = writer.take().unwrap();
    let (taken, result) = tokio::task::spawn_blocking(move || {
        let result = call(taken.as_mut());
        (taken, result)
    })
    .await
    .unwrap();
    *writer = Some(taken);
    result
}

/// Reads of `a` (moved to `websocket_setup`, tenant x) and `b` (completed, newer, tenant y):
/// by id, filtered, a page at a time, and `a`'s events.
async fn reads_filter_and_page(store: &dyn Store, a_id: ExecutionId, b_id: ExecutionId) {
    let record = store.get(a_id).await.unwrap().unwrap();
    assert_eq!(record.current_phase, Phase::WebsocketSetup);
    let page = store
        .list(ListQuery {
            tenant: Some("x".into()),
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records.len(), 1);
    let page = store
        .list(ListQuery {
            states: Some(vec![ExecutionState::Completed]),
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records[0].execution_id, b_id);
    let page = store
        .list(ListQuery {
            limit: 1,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records[0].execution_id, b_id, "newest first");
    let next = store
        .list(ListQuery {
            limit: 1,
            before: page.next_cursor,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(next.records[0].execution_id, a_id);
    assert_eq!(next.next_cursor, None);
    let events = store
        .events(EventQuery {
            ranges: vec![super::LogRange {
                shard: 0,
                after: 0,
                up_to: u64::MAX >> 2,
            }],
            execution_id: Some(a_id),
            limit: 10,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(&e.json).unwrap()["type"].to_string())
        .collect();
    assert_eq!(kinds, ["\"execution_created\"", "\"phase_changed\""]);
}

/// Idempotency keys: one reservation wins, the answer is kept, a release frees only a key not
/// answered, expiry by age.
async fn idempotency_keys(writer: &mut Option<Box<dyn StoreWriter>>) {
    use super::{KeyOp, KeyState};
    let at = Utc::now() - chrono::Duration::hours(2);
    let reserve = move |key: &str, fingerprint: &str| KeyOp::Reserve {
        scope: "s".into(),
        key: key.into(),
        fingerprint: fingerprint.into(),
        at,
    };
    let mut run = async |op: KeyOp| on_writer(writer, move |w| w.idempotency(&op)).await.unwrap();
    assert_eq!(run(reserve("k", "f1")).await, KeyState::Reserved);
    assert_eq!(
        run(reserve("k", "f2")).await,
        KeyState::Pending {
            fingerprint: "f1".into()
        }
    );
    let complete = KeyOp::Complete {
        scope: "s".into(),
        key: "k".into(),
        status: 201,
        body: "{}".into(),
    };
    assert_eq!(run(complete).await, KeyState::Changed(1));
    let done = KeyState::Done {
        fingerprint: "f1".into(),
        status: 201,
        body: "{}".into(),
    };
    assert_eq!(run(reserve("k", "f1")).await, done);
    let release = |key: &str| KeyOp::Release {
        scope: "s".into(),
        key: key.into(),
    };
    assert_eq!(run(release("k")).await, KeyState::Changed(0), "an answered key stays");
    assert_eq!(run(reserve("free", "f")).await, KeyState::Reserved);
    assert_eq!(run(release("free")).await, KeyState::Changed(1));
    assert_eq!(
        run(reserve("free", "g")).await,
        KeyState::Reserved,
        "released: usable again"
    );
    let other_scope = KeyOp::Reserve {
        scope: "t".into(),
        key: "k".into(),
        fingerprint: "x".into(),
        at: Utc::now(),
    };
    assert_eq!(run(other_scope).await, KeyState::Reserved, "keys are per scope");
    let expire = KeyOp::Expire {
        before: Utc::now() - chrono::Duration::hours(1),
    };
    assert_eq!(run(expire).await, KeyState::Changed(2), "the two old ones of scope s");
    assert_eq!(run(reserve("k", "f9")).await, KeyState::Reserved);
}

/// Retention: only the shards given (a node purges its own), finished executions past the
/// cut-off, and the log's events older than its own cut-off.
async fn purges_by_shard_and_age(writer: &mut Option<Box<dyn StoreWriter>>) {
    // Retention purges only the shards it is given (a node, its own).
    let soon = Utc::now() + chrono::Duration::seconds(1);
    let cutoff = super::Cutoff {
        finished_before: soon,
        events_before: soon,
        shards: vec![1],
    };
    let purged = on_writer(writer, move |w| w.purge(&cutoff)).await.unwrap();
    assert_eq!(
        purged,
        super::Purged::default(),
        "another shard's purge touches nothing here"
    );

    // Retention removes the finished executions, and the log's events older than its own cut-off.
    let cutoff = super::Cutoff {
        finished_before: soon,
        events_before: Utc::now() - chrono::Duration::hours(1),
        shards: vec![0],
    };
    let purged = on_writer(writer, move |w| w.purge(&cutoff)).await.unwrap();
    assert_eq!(
        purged,
        super::Purged {
            executions: 2,
            events: 0
        },
        "the log is younger than its cut-off"
    );
    let cutoff = super::Cutoff {
        finished_before: soon,
        events_before: soon,
        shards: vec![0],
    };
    let purged = on_writer(writer, move |w| w.purge(&cutoff)).await.unwrap();
    assert_eq!(
        purged,
        super::Purged {
            executions: 0,
            events: 6
        }
    );
}

/// Revocation (the last valid admin token refused), listing, and tickets taken once.
async fn tokens_revoke_and_tickets_are_taken_once(store: &dyn Store, writer: &mut Option<Box<dyn StoreWriter>>) {
    use crate::auth::token_id;
    use crate::store::{Revoked, Ticket};
    let admin_hash = "a".repeat(64);
    let mut expired = TokenGrant::new(Role::Admin, "ops".into(), None, None).unwrap();
    expired.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
    let admin = TokenGrant::new(Role::Admin, "ops".into(), None, None).unwrap();
    let (stored, hash) = (admin.clone(), admin_hash.clone());
    on_writer(writer, move |w| {
        w.insert_token(&hash, &stored)?;
        w.insert_token(&"e".repeat(64), &expired)
    })
    .await
    .unwrap();
    let listed = store.tokens().await.unwrap();
    let mine = listed.iter().find(|info| info.id == token_id(&admin_hash)).unwrap();
    assert_eq!((mine.grant.role, mine.revoked_at), (Role::Admin, None));
    let now = Utc::now();
    let id = token_id(&admin_hash);
    let answer = on_writer(writer, move |w| w.revoke_token(&id, now)).await.unwrap();
    assert_eq!(answer, Revoked::LastAdmin, "the expired admin token is no other");
    let id = token_id("abc");
    let answer = on_writer(writer, move |w| w.revoke_token(&id, now)).await.unwrap();
    let Revoked::Done { info, hash } = answer else {
        panic!("{answer:?}")
    };
    assert_eq!((hash.as_str(), info.revoked_at.is_some()), ("abc", true));
    assert_eq!(
        store.token("abc".into()).await.unwrap(),
        None,
        "a revoked token is not found"
    );
    let answer = on_writer(writer, move |w| w.revoke_token("tok_0000000000000000", now))
        .await
        .unwrap();
    assert_eq!(answer, Revoked::Unknown);

    let ticket = Ticket {
        hash: "t1".into(),
        token_hash: admin_hash.clone(),
        expires_at: Utc::now() + chrono::Duration::seconds(30),
    };
    on_writer(writer, move |w| w.insert_ticket(&ticket)).await.unwrap();
    let taken = on_writer(writer, |w| w.take_ticket("t1")).await.unwrap();
    assert_eq!(taken.map(|(token, _)| token), Some(admin_hash));
    assert_eq!(on_writer(writer, |w| w.take_ticket("t1")).await.unwrap(), None);
}

async fn writes_reads_purges_and_reloads(config: StoreConfig) {
    let store = open(&config, std::path::Path::new(".")).await.unwrap();
    let mut writer = Some(store.writer().await.unwrap());

    let tracker = Tracker::new();
    let a = tracker
        .create(NewExecution::new("a", "t1", "alice").tenant("x"))
        .unwrap();
    let b = tracker.create(NewExecution::new("b", "t2", "bob").tenant("y")).unwrap();
    let (a_id, b_id) = (a.execution_id, b.execution_id);
    let moved = tracker.transition(a_id, Phase::WebsocketSetup, None).unwrap();
    let done = tracker.complete(b_id, None).unwrap();
    let batch = batch_of(&tracker, &[a, b, moved, done], 10_000);
    on_writer(&mut writer, move |w| w.commit(std::slice::from_ref(&batch)))
        .await
        .unwrap();
    // A batch retried after an unknown outcome writes nothing twice.
    let again = batch_of(&tracker, &[], 10_000);
    on_writer(&mut writer, move |w| w.commit(std::slice::from_ref(&again)))
        .await
        .unwrap();

    reads_filter_and_page(store.as_ref(), a_id, b_id).await;

    let grant = TokenGrant::new(Role::Viewer, "x".into(), Some("alice".into()), None).unwrap();
    let stored = grant.clone();
    on_writer(&mut writer, move |w| w.insert_token("abc", &stored))
        .await
        .unwrap();
    let found = store.token("abc".into()).await.unwrap().unwrap();
    assert_eq!((found.role, found.user_id), (grant.role, grant.user_id));
    assert_eq!(store.token("nope".into()).await.unwrap(), None);
    idempotency_keys(&mut writer).await;

    // Reloading: the finished one only when recent enough; counts of all; the reservation.
    let loaded = store.load(0, Utc::now() - chrono::Duration::hours(1)).await.unwrap();
    assert_eq!(loaded.records.len(), 2);
    assert_eq!(loaded.high_water, 10_000);
    assert!(!store.has_admin_token().await.unwrap());
    tokens_revoke_and_tickets_are_taken_once(store.as_ref(), &mut writer).await;
    assert!(store.has_admin_token().await.unwrap());
    let loaded = store.load(0, Utc::now() + chrono::Duration::hours(1)).await.unwrap();
    assert_eq!(loaded.records.len(), 1, "old finished executions stay in the store");
    assert_eq!(loaded.counts.iter().map(|c| c.count).sum::<u64>(), 2);

    // An execution that left memory before its row was written: its terminal event is applied
    // to the stored row.
    let c = tracker.create(NewExecution::new("c", "t3", "carol")).unwrap();
    let c_id = c.execution_id;
    let batch = batch_of(&tracker, &[c], 10_000);
    on_writer(&mut writer, move |w| w.commit(std::slice::from_ref(&batch)))
        .await
        .unwrap();
    let finished = tracker.fail(c_id, "gone").unwrap();
    finish_out_of_memory(&mut writer, &finished).await;
    let stored = store.get(c_id).await.unwrap().unwrap();
    assert_eq!(stored.state, ExecutionState::Failed);
    assert_eq!(stored.error.as_deref(), Some("gone"));

    purges_by_shard_and_age(&mut writer).await;
    assert!(store.get(b_id).await.unwrap().is_none());
    assert!(store.get(a_id).await.unwrap().is_some());
    on_writer(&mut writer, |w| w.check()).await.unwrap();
    on_writer(&mut writer, |w| w.close()).await.unwrap();

    // Reopening keeps everything and applies no migration twice.
    let store = open(&config, std::path::Path::new(".")).await.unwrap();
    assert!(store.get(a_id).await.unwrap().is_some());
}

/// A capped history written in several batches (the cap trims the oldest), read back by `get`, `list` and `load`
/// exactly as the tracker holds it, and kept when a terminal event is applied to the stored row.
async fn history_is_appended_capped_and_read_back(config: StoreConfig) {
    let store = open(&config, std::path::Path::new(".")).await.unwrap();
    let mut writer = Some(store.writer().await.unwrap());
    let tracker = Tracker::with_config(agentrack::TrackerConfig {
        max_phase_history: Some(4),
        ..agentrack::TrackerConfig::default()
    });
    let created = tracker.create(NewExecution::new("a", "t", "u")).unwrap();
    let id = created.execution_id;
    let mut changes = vec![created, tracker.start(id).unwrap()];
    for phase in [Phase::WebsocketSetup, Phase::ContextValidation, Phase::Starting] {
        changes.push(tracker.transition(id, phase, None).unwrap());
    }
    let mut step = 0;
    for (round, steps) in [2usize, 5, 1].into_iter().enumerate() {
        for _ in 0..steps {
            let phase = if step % 2 == 0 {
                Phase::Thinking
            } else {
                Phase::LlmInteraction
            };
            let metadata = serde_json::json!({"step": step}).as_object().cloned();
            changes.push(tracker.transition(id, phase, metadata).unwrap());
            step += 1;
        }
        let batch = batch_of(&tracker, &std::mem::take(&mut changes), 10_000);
        on_writer(&mut writer, move |w| w.commit(std::slice::from_ref(&batch)))
            .await
            .unwrap();
        let held = tracker.get(id).unwrap();
        assert_eq!(store.get(id).await.unwrap().unwrap(), held, "round {round}: get");
        let page = store
            .list(ListQuery {
                limit: 10,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page.records, std::slice::from_ref(&held), "round {round}: list");
        let loaded = store.load(0, Utc::now() - chrono::Duration::hours(1)).await.unwrap();
        assert_eq!(loaded.records, [held], "round {round}: load");
    }
    let held = tracker.get(id).unwrap();
    assert_eq!(held.phase_history.len(), 4);
    assert_eq!(held.phase_history_dropped, 3 + 2 + 5 + 1 - 4);
    // The terminal event applied to the stored row keeps its history.
    let finished = tracker.complete(id, None).unwrap();
    finish_out_of_memory(&mut writer, &finished).await;
    let stored = store.get(id).await.unwrap().unwrap();
    assert_eq!(stored.state, ExecutionState::Completed);
    assert_eq!(stored.phase_history, held.phase_history);
    assert_eq!(stored.phase_history_dropped, held.phase_history_dropped);
    on_writer(&mut writer, |w| w.close()).await.unwrap();
}

/// The numbers of the phase changes of `id` in the `phases` table, in order.
async fn phase_numbers(config: &StoreConfig, id: ExecutionId) -> Vec<i64> {
    let url = config.url.clone().unwrap();
    let sql = "SELECT n FROM phases WHERE execution_id = $1 ORDER BY n";
    if let Some(path) = url.strip_prefix("sqlite://") {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut statement = conn.prepare(sql).unwrap();
        statement
            .query_map([id.to_string()], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    } else {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let rows = client.query(sql, &[&id.to_string()]).await.unwrap();
        rows.iter().map(|row| row.get(0)).collect()
    }
}

/// The record as the row of `id` holds it, without what `phases` adds.
async fn row_record(config: &StoreConfig, id: ExecutionId) -> agentrack::ExecutionRecord {
    let url = config.url.clone().unwrap();
    let sql = "SELECT record FROM executions WHERE execution_id = $1";
    let text: String = if let Some(path) = url.strip_prefix("sqlite://") {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.query_row(sql, [id.to_string()], |row| row.get(0)).unwrap()
    } else {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.query_one(sql, &[&id.to_string()]).await.unwrap().get(0)
    };
    serde_json::from_str(&text).unwrap()
}

/// `get`, `list` and `load` each give back exactly `held`, the one execution in the store.
async fn reads_back(store: &dyn Store, held: &agentrack::ExecutionRecord, what: &str) {
    assert_eq!(
        store.get(held.execution_id).await.unwrap().as_ref(),
        Some(held),
        "{what}: get"
    );
    let page = store
        .list(ListQuery {
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.records, std::slice::from_ref(held), "{what}: list");
    let loaded = store.load(0, Utc::now() - chrono::Duration::hours(1)).await.unwrap();
    assert_eq!(loaded.records, std::slice::from_ref(held), "{what}: load");
}

/// A golden path (create, start, the nine phases, complete) written after every change: its
/// whole history stays in its row, so `phases` is never written, and it reads back whole.
async fn a_golden_path_stays_in_its_row(config: StoreConfig) {
    let store = open(&config, std::path::Path::new(".")).await.unwrap();
    let mut writer = Some(store.writer().await.unwrap());
    let tracker = Tracker::new();
    let created = tracker.create(NewExecution::new("a", "t", "u")).unwrap();
    let id = created.execution_id;
    let mut changes = vec![vec![created], vec![tracker.start(id).unwrap()]];
    for phase in [
        Phase::WebsocketSetup,
        Phase::ContextValidation,
        Phase::Starting,
        Phase::Thinking,
        Phase::LlmInteraction,
        Phase::ToolExecution,
        Phase::ResultProcessing,
        Phase::Completing,
        Phase::Completed,
    ] {
        let metadata = serde_json::json!({"note": format!("{phase:?}")}).as_object().cloned();
        changes.push(vec![tracker.transition(id, phase, metadata).unwrap()]);
    }
    changes.push(vec![tracker.complete(id, None).unwrap()]);
    for change in changes {
        let batch = batch_of(&tracker, &change, 10_000);
        on_writer(&mut writer, move |w| w.commit(std::slice::from_ref(&batch)))
            .await
            .unwrap();
    }
    let held = tracker.get(id).unwrap();
    assert_eq!(held.phase_history.len(), 9);
    reads_back(store.as_ref(), &held, "golden path").await;
    assert_eq!(row_record(&config, id).await, held, "the row is the record as it is");
    assert_eq!(phase_numbers(&config, id).await, Vec::<i64>::new());
    on_writer(&mut writer, |w| w.close()).await.unwrap();
}

/// 40 phase changes, every third with ~2 KiB of metadata, written in several batches (with a
/// cap, or without): each row holds at most the last 16 changes and 8 KiB of them, `phases`
/// holds exactly the kept changes before that tail (each once; the cap's dropped ones leave
/// it), and `get`, `list` and `load` give the record back exactly, as does applying a terminal
/// event to the stored row.
async fn a_long_history_spills_from_its_row(config: StoreConfig, cap: Option<usize>) {
    let store = open(&config, std::path::Path::new(".")).await.unwrap();
    let mut writer = Some(store.writer().await.unwrap());
    let tracker = Tracker::with_config(agentrack::TrackerConfig {
        max_phase_history: cap,
        ..agentrack::TrackerConfig::default()
    });
    let created = tracker.create(NewExecution::new("a", "t", "u")).unwrap();
    let id = created.execution_id;
    let mut changes = vec![created, tracker.start(id).unwrap()];
    for phase in [Phase::WebsocketSetup, Phase::ContextValidation, Phase::Starting] {
        changes.push(tracker.transition(id, phase, None).unwrap());
    }
    let (mut step, mut byte_bound_bit) = (0, false);
    for (round, steps) in [1usize, 6, 13, 2, 15].into_iter().enumerate() {
        for _ in 0..steps {
            let phase = if step % 2 == 0 {
                Phase::Thinking
            } else {
                Phase::LlmInteraction
            };
            let blob = if step % 3 == 0 { "x".repeat(2048) } else { String::new() };
            let metadata = serde_json::json!({"step": step, "blob": blob}).as_object().cloned();
            changes.push(tracker.transition(id, phase, metadata).unwrap());
            step += 1;
        }
        let batch = batch_of(&tracker, &std::mem::take(&mut changes), 10_000);
        on_writer(&mut writer, move |w| w.commit(std::slice::from_ref(&batch)))
            .await
            .unwrap();
        let held = tracker.get(id).unwrap();
        reads_back(store.as_ref(), &held, &format!("round {round}")).await;
        let row = row_record(&config, id).await;
        let tail = &row.phase_history;
        assert!(tail.len() <= 16, "round {round}: {} changes in the row", tail.len());
        let bytes: usize = tail.iter().map(|t| serde_json::to_vec(t).unwrap().len()).sum();
        assert!(bytes <= 8 * 1024, "round {round}: {bytes} bytes of changes in the row");
        assert_eq!(row.phase_history_dropped + tail.len() as u64, held.phase_count());
        assert_eq!(tail[..], held.phase_history[held.phase_history.len() - tail.len()..]);
        let spilled: Vec<i64> = (held.phase_history_dropped..row.phase_history_dropped)
            .map(|n| i64::try_from(n).unwrap())
            .collect();
        assert_eq!(phase_numbers(&config, id).await, spilled, "round {round}: phases");
        byte_bound_bit |= tail.len() < 16 && row.phase_history_dropped > held.phase_history_dropped;
    }
    let held = tracker.get(id).unwrap();
    assert_eq!(held.phase_count(), 40);
    assert!(byte_bound_bit, "the byte bound never shortened the row's tail");
    if let Some(cap) = cap {
        assert_eq!(held.phase_history.len(), cap);
        assert_eq!(held.phase_history_dropped, 40 - cap as u64);
    } else {
        assert_eq!(held.phase_history_dropped, 0);
    }
    let in_phases = phase_numbers(&config, id).await;
    let finished = tracker.complete(id, None).unwrap();
    finish_out_of_memory(&mut writer, &finished).await;
    let stored = store.get(id).await.unwrap().unwrap();
    assert_eq!(stored.state, ExecutionState::Completed);
    assert_eq!(stored.phase_history, held.phase_history);
    assert_eq!(stored.phase_history_dropped, held.phase_history_dropped);
    assert_eq!(
        phase_numbers(&config, id).await,
        in_phases,
        "no change written twice or lost"
    );
    on_writer(&mut writer, |w| w.close()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_golden_path_stays_in_its_row() {
    let dir = tempfile::tempdir().unwrap();
    a_golden_path_stays_in_its_row(sqlite(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_golden_path_stays_in_its_row() {
    a_golden_path_stays_in_its_row(config(fresh_postgres().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_long_history_spills_from_its_row() {
    let dir = tempfile::tempdir().unwrap();
    a_long_history_spills_from_its_row(sqlite(&dir), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_long_history_spills_from_its_row() {
    a_long_history_spills_from_its_row(config(fresh_postgres().await), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_capped_long_history_spills_from_its_row() {
    let dir = tempfile::tempdir().unwrap();
    a_long_history_spills_from_its_row(sqlite(&dir), Some(24)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_capped_long_history_spills_from_its_row() {
    a_long_history_spills_from_its_row(config(fresh_postgres().await), Some(24)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_history_is_appended_capped_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    history_is_appended_capped_and_read_back(sqlite(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_history_is_appended_capped_and_read_back() {
    history_is_appended_capped_and_read_back(config(fresh_postgres().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_reads_purges_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    writes_reads_purges_and_reloads(sqlite(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_writes_reads_purges_and_reloads() {
    writes_reads_purges_and_reloads(config(fresh_postgres().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_newer_schema() {
    let url = fresh_postgres().await;
    drop(open(&config(url.clone()), std::path::Path::new(".")).await.unwrap());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("UPDATE schema_version SET version = 99")
        .await
        .unwrap();
    let error = open(&config(url), std::path::Path::new(".")).await.err().unwrap();
    assert!(matches!(error, StoreError::SchemaTooNew { found: 99, .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_writer_reconnects_after_its_connection_is_killed() {
    let url = fresh_postgres().await;
    let store: Arc<dyn Store> = open(&config(url.clone()), std::path::Path::new(".")).await.unwrap();
    let mut writer = Some(store.writer().await.unwrap());
    let tracker = Tracker::new();
    let first = tracker.create(NewExecution::new("a", "t", "u")).unwrap();
    let batch = batch_of(&tracker, &[first], 10_000);
    on_writer(&mut writer, move |w| w.commit(std::slice::from_ref(&batch)))
        .await
        .unwrap();
    // Kill every backend of this test's database (not the other tests'): the writer's
    // connection among them.
    let database = url.rsplit('/').next().unwrap_or_default().to_owned();
    admin()
        .await
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
            &[&database],
        )
        .await
        .unwrap();
    let second = tracker.create(NewExecution::new("a", "t", "u")).unwrap();
    let id = second.execution_id;
    let batch = Arc::new(batch_of(&tracker, &[second], 10_000));
    // The pipeline retries a failed commit: at most one attempt fails, on the dead connection.
    let mut failures = 0;
    loop {
        let attempt = Arc::clone(&batch);
        match on_writer(&mut writer, move |w| w.commit(std::slice::from_ref(&attempt))).await {
            Ok(()) => break,
            Err(error) => {
                failures += 1;
                assert!(failures < 2, "did not reconnect: {error}");
            }
        }
    }
    let mut found = None;
    for _ in 0..100 {
        match store.get(id).await {
            Ok(record) => {
                found = record;
                break;
            }
            // A pooled read connection may have been killed too; the pool replaces it.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    assert!(found.is_some(), "the retried batch is stored");
}
