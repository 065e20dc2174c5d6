//! The pipeline against a recording writer.

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use agentrack::{ExecutionId, NewExecution, Phase};
use tokio::sync::mpsc as channel;

use super::*;
use crate::store::{Batch, RowUpdate};

/// One committed batch: (`global_seq`, type) of its events, (id, seq) of its rows.
type Written = (Vec<(u64, &'static str)>, Vec<(ExecutionId, u64)>);

/// Per committed batch: (id, seq) of its events that belong to an execution.
type ExecutionEvents = Vec<Vec<(ExecutionId, u64)>>;

/// A writer that remembers what it was given and fails while told to.
#[derive(Clone, Default)]
struct Recorder {
    batches: Arc<Mutex<Vec<Written>>>,
    execution_events: Arc<Mutex<ExecutionEvents>>,
    failures_left: Arc<AtomicUsize>,
}

impl StoreWriter for Recorder {
    fn commit(&mut self, batches: &[Batch]) -> Result<(), StoreError> {
        let batch = &batches[0];
        if self
            .failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::database("disk on fire"));
        }
        let events = batch
            .events
            .iter()
            .map(|e| (e.event.global_seq, e.event.kind.name()))
            .collect();
        let rows = batch
            .rows
            .iter()
            .filter_map(|row| match row {
                RowUpdate::Snapshot(record) => Some((record.execution_id, record.seq)),
                RowUpdate::Finish { .. } => None,
            })
            .collect();
        let execution_events = batch
            .events
            .iter()
            .filter_map(|e| e.event.execution.as_ref().map(|scope| (scope.execution_id, scope.seq)))
            .collect();
        self.batches.lock().push((events, rows));
        self.execution_events.lock().push(execution_events);
        Ok(())
    }
    fn purge(&mut self, _cutoff: &crate::store::Cutoff) -> Result<Purged, StoreError> {
        Ok(Purged::default())
    }
    fn insert_token(&mut self, _hash: &str, _grant: &TokenGrant) -> Result<(), StoreError> {
        Ok(())
    }
    // The recorder stores no tokens: there is nothing to revoke, and tickets are never taken.
    fn revoke_token(
        &mut self,
        _id: &str,
        _at: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::store::Revoked, StoreError> {
        Ok(crate::store::Revoked::Unknown)
    }
    fn insert_ticket(&mut self, _ticket: &crate::store::Ticket) -> Result<(), StoreError> {
        Ok(())
    }
    fn take_ticket(&mut self, _hash: &str) -> Result<Option<crate::store::TakenTicket>, StoreError> {
        Ok(None)
    }
    fn close(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

fn start_publishing(recorder: &Recorder, flush: Duration, publisher: Box<dyn Publisher>) -> (Tracker, Arc<Pipeline>) {
    let tracker = Tracker::new();
    let pipeline = Pipeline::start(
        Box::new(recorder.clone()),
        PipelineConfig {
            heartbeat_flush: flush,
            ..PipelineConfig::default()
        },
        publisher,
        tokio::sync::mpsc::unbounded_channel().0,
    )
    .unwrap();
    pipeline.attach(0, &tracker, 0, None).unwrap();
    (tracker, pipeline)
}

fn start(recorder: &Recorder, flush: Duration) -> (Tracker, Arc<Pipeline>) {
    start_publishing(recorder, flush, Box::new(()))
}

#[tokio::test]
async fn every_event_is_written_in_order_with_a_row_at_least_as_new_as_its_last_urgent_change() {
    let recorder = Recorder::default();
    let (tracker, pipeline) = start(&recorder, Duration::from_secs(60));
    let id = tracker.create(NewExecution::new("a", "t", "u")).unwrap().id();
    let started = tracker.start(id).unwrap();
    let start_seq = started.events.last().unwrap().execution.as_ref().unwrap().seq;
    let change = tracker.transition(id, Phase::WebsocketSetup, None).unwrap();
    let last = change.events.last().unwrap().global_seq;
    pipeline.wait_committed(0, last, Duration::from_secs(5)).await.unwrap();
    let batches = recorder.batches.lock().clone();
    let seqs: Vec<u64> = batches
        .iter()
        .flat_map(|(events, _)| events.iter().map(|e| e.0))
        .collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>(), "every event is durable at once");
    let newest_row = batches.iter().flat_map(|(_, rows)| rows).map(|r| r.1).max().unwrap();
    assert!(newest_row >= start_seq, "the row reflects the state change");
    pipeline.shutdown();
}

#[tokio::test]
async fn a_transitions_row_waits_for_the_flush_but_its_event_does_not() {
    let recorder = Recorder::default();
    let (tracker, pipeline) = start(&recorder, Duration::from_secs(60));
    let id = tracker.create(NewExecution::new("a", "t", "u")).unwrap().id();
    let created = tracker.get(id).unwrap().seq;
    pipeline.flush().await.unwrap();
    let rows_before = recorder
        .batches
        .lock()
        .iter()
        .map(|(_, rows)| rows.len())
        .sum::<usize>();
    let change = tracker.transition(id, Phase::WebsocketSetup, None).unwrap();
    let seq = change.events.last().unwrap().global_seq;
    pipeline.wait_committed(0, seq, Duration::from_secs(5)).await.unwrap();
    {
        let batches = recorder.batches.lock();
        assert!(
            batches.iter().flat_map(|(events, _)| events).any(|e| e.0 == seq),
            "the event is written"
        );
        let rows: Vec<(ExecutionId, u64)> = batches.iter().flat_map(|(_, rows)| rows.clone()).collect();
        assert_eq!(rows.len(), rows_before, "no row for the transition yet");
        assert!(rows.iter().all(|row| row.1 == created));
    }
    pipeline.flush().await.unwrap();
    let newest = recorder
        .batches
        .lock()
        .iter()
        .flat_map(|(_, rows)| rows.clone())
        .map(|r| r.1)
        .max();
    assert_eq!(newest, Some(tracker.get(id).unwrap().seq), "the flush writes it");
    pipeline.shutdown();
}

#[tokio::test]
async fn heartbeats_are_coalesced_to_the_latest_and_flushed_at_shutdown() {
    let recorder = Recorder::default();
    let (tracker, pipeline) = start(&recorder, Duration::from_secs(60));
    let id = tracker.create(NewExecution::new("a", "t", "u")).unwrap().id();
    tracker.start(id).unwrap();
    // The first heartbeat moves the execution to running: a state change, written at once
    // (with its heartbeat).
    let first = tracker.heartbeat(id).unwrap();
    let first_heartbeat = first.events.last().unwrap().global_seq;
    pipeline
        .wait_committed(0, first_heartbeat, Duration::from_secs(5))
        .await
        .unwrap();
    let mut last = 0;
    for _ in 0..10 {
        last = tracker.heartbeat(id).unwrap().events.last().unwrap().global_seq;
    }
    // Published (nobody waits for heartbeats) but not yet written.
    pipeline.wait_committed(0, last, Duration::from_secs(5)).await.unwrap();
    let written = |recorder: &Recorder| {
        recorder
            .batches
            .lock()
            .iter()
            .flat_map(|(events, _)| events.clone())
            .filter(|e| e.1 == "heartbeat")
            .collect::<Vec<_>>()
    };
    assert!(written(&recorder).iter().all(|(seq, _)| *seq <= first_heartbeat));
    let stopper = Arc::clone(&pipeline);
    tokio::task::spawn_blocking(move || stopper.shutdown()).await.unwrap();
    let seqs: Vec<u64> = written(&recorder).into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(seqs.last(), Some(&last));
    assert!(
        seqs.iter().all(|seq| *seq == first_heartbeat || *seq == last),
        "only the latest of the plain heartbeats: {seqs:?}"
    );
}

#[tokio::test]
async fn a_failing_store_holds_acknowledgements_until_it_recovers() {
    let recorder = Recorder::default();
    recorder.failures_left.store(3, Ordering::SeqCst);
    let (tracker, pipeline) = start(&recorder, Duration::from_secs(60));
    let change = tracker.create(NewExecution::new("a", "t", "u")).unwrap();
    let seq = change.events[0].global_seq;
    // The first attempts fail: nothing is confirmed, and the pipeline says it is unhealthy.
    let early = pipeline.wait_committed(0, seq, Duration::from_millis(40)).await;
    assert_eq!(early, Err(CommitError::TimedOut(Duration::from_millis(40))));
    // Retries (50, 100, 200 ms) then succeed; the same batch goes in whole, once.
    pipeline.wait_committed(0, seq, Duration::from_secs(5)).await.unwrap();
    assert!(pipeline.is_healthy());
    assert_eq!(pipeline.stats().commit_failures.load(Ordering::Relaxed), 3);
    assert_eq!(recorder.batches.lock().len(), 1);
    pipeline.shutdown();
}

/// Publishes to a channel.
struct Forward(channel::UnboundedSender<Arc<SerializedEvent>>);

impl Publisher for Forward {
    fn committed(&mut self, _events: &[Arc<SerializedEvent>]) {}

    fn publish(&mut self, events: &[Arc<SerializedEvent>]) {
        for event in events {
            let _ = self.0.send(Arc::clone(event));
        }
    }
}

#[tokio::test]
async fn the_publisher_only_gets_committed_events() {
    let recorder = Recorder::default();
    recorder.failures_left.store(1, Ordering::SeqCst);
    let (sender, mut published) = channel::unbounded_channel();
    let (tracker, pipeline) = start_publishing(&recorder, Duration::from_secs(60), Box::new(Forward(sender)));
    tracker.create(NewExecution::new("a", "t", "u")).unwrap();
    let first = published.recv().await.unwrap();
    assert_eq!(first.event.global_seq, 1);
    assert!(!recorder.batches.lock().is_empty(), "written before it was published");
    assert!(first.text().contains("execution_created"));
    pipeline.shutdown();
}

#[tokio::test]
async fn purges_and_tokens_go_through_the_writer() {
    let recorder = Recorder::default();
    let (_tracker, pipeline) = start(&recorder, Duration::from_secs(60));
    let purged = pipeline.purge(chrono::Utc::now()).await.unwrap();
    assert_eq!(purged, Purged::default());
    let grant = TokenGrant::new(crate::auth::Role::Admin, "t".into(), None, None).unwrap();
    pipeline.insert_token("hash".into(), grant).await.unwrap();
    let stopper = Arc::clone(&pipeline);
    tokio::task::spawn_blocking(move || stopper.shutdown()).await.unwrap();
    let error = pipeline.purge(chrono::Utc::now()).await.unwrap_err();
    assert!(matches!(error, StoreError::Task(_)), "{error}");
}

/// Whatever the interleaving, a row is never committed ahead of its execution's log: every row's
/// `seq` is that of an event already written (in its batch or an earlier one). Were it ahead, a
/// lost next batch would leave a row claiming a change without its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_row_is_committed_ahead_of_its_log_under_concurrent_changes() {
    let recorder = Recorder::default();
    let (tracker, pipeline) = start(&recorder, Duration::from_millis(5));
    let workers: Vec<_> = (0..4)
        .map(|worker| {
            let tracker = tracker.clone();
            std::thread::spawn(move || {
                for run in 0..300 {
                    let id = tracker
                        .create(NewExecution::new("a", format!("t{worker}-{run}"), "u"))
                        .unwrap()
                        .id();
                    tracker.start(id).unwrap();
                    tracker.heartbeat(id).unwrap();
                    tracker.transition(id, Phase::WebsocketSetup, None).unwrap();
                    tracker.complete(id, None).unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    pipeline.flush().await.unwrap();
    let batches = recorder.batches.lock().clone();
    let logs = recorder.execution_events.lock().clone();
    let mut written: HashMap<ExecutionId, u64> = HashMap::new();
    for ((_, rows), events) in batches.iter().zip(&logs) {
        for (id, seq) in events {
            let newest = written.entry(*id).or_default();
            *newest = (*newest).max(*seq);
        }
        for (id, seq) in rows {
            assert!(
                written.get(id).is_some_and(|logged| logged >= seq),
                "{id}: row at seq {seq}, its log at {:?}",
                written.get(id)
            );
        }
    }
    assert_eq!(written.len(), 1200, "every execution reached the log");
    pipeline.shutdown();
}

/// A writer whose token inserts hang until `release` is dropped: a store that stopped answering.
struct Stalled {
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl StoreWriter for Stalled {
    fn commit(&mut self, _batches: &[Batch]) -> Result<(), StoreError> {
        Ok(())
    }

    fn purge(&mut self, _cutoff: &crate::store::Cutoff) -> Result<Purged, StoreError> {
        Ok(Purged::default())
    }

    fn insert_token(&mut self, _hash: &str, _grant: &TokenGrant) -> Result<(), StoreError> {
        let _ = self.release.lock().map(|release| release.recv());
        Ok(())
    }

    fn revoke_token(
        &mut self,
        _id: &str,
        _at: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::store::Revoked, StoreError> {
        Ok(crate::store::Revoked::Unknown)
    }

    fn insert_ticket(&mut self, _ticket: &crate::store::Ticket) -> Result<(), StoreError> {
        Ok(())
    }

    fn take_ticket(&mut self, _hash: &str) -> Result<Option<crate::store::TakenTicket>, StoreError> {
        Ok(None)
    }

    fn close(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

// Real time, but no threshold: the writer never answers until released, so every wait ends
// by its timeout (50 ms, the shortest that is not a busy loop).
#[tokio::test]
async fn a_request_the_store_does_not_answer_times_out_and_the_queue_refuses_past_its_bound() {
    let (release, stalled) = std::sync::mpsc::channel();
    let pipeline = Pipeline::start(
        Box::new(Stalled {
            release: std::sync::Mutex::new(stalled),
        }),
        PipelineConfig {
            max_queued: 2,
            answer_timeout: Duration::from_millis(50),
            ..PipelineConfig::default()
        },
        Box::new(()),
        tokio::sync::mpsc::unbounded_channel().0,
    )
    .unwrap();
    let grant = || TokenGrant::new(crate::auth::Role::Admin, "t".into(), None, None).unwrap();
    // The writer takes the first and hangs in it; the answer is not waited for past the timeout.
    let error = pipeline.insert_token("a".into(), grant()).await.unwrap_err();
    assert!(error.to_string().contains("did not answer within 50ms"), "{error}");
    assert!(pipeline.has_room());
    // What the stalled writer cannot take stays queued, up to the bound.
    for hash in ["b", "c"] {
        assert!(pipeline.insert_token(hash.into(), grant()).await.is_err());
    }
    assert_eq!(pipeline.queued(), 2);
    assert!(!pipeline.has_room(), "writes are refused at the bound");
    drop(release);
    tokio::task::spawn_blocking(move || pipeline.shutdown()).await.unwrap();
}
