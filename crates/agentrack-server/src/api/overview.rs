//! `GET /v1/overview`: everything the dashboard's overview shows, in one read scoped to the
//! caller.
//!
//! The numbers come from three places, each the cheapest that is exact:
//!
//! - counts by outcome, and so the rates, from the server's per-(tenant, user) counters, which
//!   include executions that have left memory and the ones stored before a restart;
//! - alive executions by state, stuck ones, per-execution breakers and the dead / timed-out
//!   executions of the last hour from the records in memory (alive executions are always in
//!   memory; finished ones stay there for the tracker's `cleanup_age`, an hour by default, so the
//!   hour is complete unless that is set shorter or `max_finished` is reached);
//! - named breakers from the tracker, as `/v1/breakers` shows them and to the tokens it lets list
//!   them (viewers see none).
//!
//! This node's part is walked at most once per `quotas.overview_cache` (1 s by default) per
//! scope, and reused within it (see [`OverviewCache`]): counted in
//! `agentrack_overview_walks_total` and `agentrack_overview_cache_hits_total`. A reader that
//! has seen events passes `since=` the cursor of the last one: a cached walk that does not cover
//! it is not reused, so a client that re-reads because of an event never gets numbers from
//! before that event (which no later event might correct).
//!
//! The response also carries `event_cursor`, where the event log stood at the time of the
//! read: a client that opens the event stream with `since=event_cursor` misses nothing that
//! happened after the numbers it shows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use agentrack::{BreakerState, ExecutionRecord, ExecutionState, Phase};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use chrono::{DateTime, Duration as Span, DurationRound, Utc};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};

use super::breakers::{LIST_BREAKERS, visible as visible_breakers};
use super::cluster_wide;
use super::error::ApiError;
use super::schemas::{also, cluster_parts, exact, phase_durations, reference};
use super::{Access, Route, RouteDoc};
use crate::app::AppState;
use crate::auth::Scope;
use crate::cluster::gather;
use crate::cursor::Positions;
use crate::metrics::{phase_stats, samples_of};

/// The incident chart's window, in minutes (one bucket a minute).
pub const INCIDENT_MINUTES: usize = 60;

/// At most this many stuck executions are listed (the most silent first).
pub const STUCK_LIMIT: usize = 20;

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![Route {
        doc: RouteDoc {
            method: "GET",
            path: "/v1/overview",
            operation_id: "getOverview",
            summary: "The dashboard overview for the caller's scope: counts by state, rates, phase percentiles, \
                      dead and timed-out executions per minute over the last hour, stuck executions, breakers.",
            durable: false,
            access: Access::Read,
            request: None,
            success: (200, Some("Overview")),
            errors: &[400, 401],
            query: PARAMETERS,
        },
        handler: get(overview),
    }]
}

/// The overview's query parameters, for its documentation and its error messages.
const PARAMETERS: &[(&str, &str)] = &[(
    "since",
    "An event cursor (an event's `cursor`, or an overview's `event_cursor`): the numbers reflect at least every event up to it.",
)];

/// The overview's query parameters as given.
#[derive(Debug, Default, Deserialize)]
struct Parameters {
    since: Option<String>,
    /// Anything else, refused by name.
    #[serde(flatten)]
    unknown: BTreeMap<String, String>,
}

/// The `Overview` schema for `/openapi.json`.
pub fn schema() -> Value {
    let integer = json!({"type": "integer", "minimum": 0});
    let number = json!({"type": "number"});
    let string = json!({"type": "string"});
    let time = json!({"type": "string", "format": "date-time"});
    let counts = json!({"type": "array", "items": integer, "minItems": INCIDENT_MINUTES, "maxItems": INCIDENT_MINUTES});
    let alive: Vec<&str> = ExecutionState::ALIVE.iter().map(|state| state.as_str()).collect();
    let schema = exact(json!({
        "generated_at": time,
        "event_seq": {"type": "integer", "minimum": 0,
            "description": "On a store with one shard: the sequence number of this read (as event_cursor)."},
        "event_cursor": {"type": "string",
            "description": "Open the event stream with since=this to miss nothing after this read."},
        "scope": reference("Scope"),
        "heartbeat_timeout_seconds": number,
        "counts": {"description": "Executions by outcome, including those only in the store.", "allOf": [exact(json!({
            "total": integer, "active": integer, "completed": integer, "failed": integer,
            "timeout": integer, "dead": integer, "cancelled": integer}))]},
        "alive_by_state": {"description": "Alive executions by state.", "allOf": [exact(
            alive.iter().map(|state| ((*state).to_owned(), integer.clone())).collect())]},
        "success_rate": {"type": "number", "description": "Completed executions as a share of finished ones (0 when none finished)."},
        "failure_rate": {"type": "number", "description": "Failed, timed-out and dead executions as a share of finished ones."},
        "phase_durations_ms": phase_durations(),
        "incidents": {"description": "Dead and timed-out executions per minute, oldest minute first.",
            "allOf": [exact(json!({"start": time, "bucket_seconds": integer, "dead": counts, "timeout": counts}))]},
        "stuck": {"type": "array", "description": "Alive executions silent for more than half the heartbeat timeout, most silent first.",
            "maxItems": STUCK_LIMIT,
            "items": exact(json!({"execution_id": string, "agent_name": string,
                "user_id": string, "thread_id": string, "state": reference("ExecutionState"),
                "current_phase": reference("Phase"), "last_heartbeat": time,
                "seconds_since_heartbeat": number}))},
        "breakers": {"type": "array", "description": "Named breakers (none for viewers).",
            "items": reference("NamedBreaker")},
        "execution_breakers": {"type": "array", "description": "Alive executions whose own breaker is not closed.",
            "items": exact(json!({"execution_id": string, "agent_name": string,
                "state": reference("BreakerState"), "failure_count": integer,
                "next_attempt_time": {"type": ["string", "null"], "format": "date-time"}}))},
    }));
    also(schema, cluster_parts())
}

/// Dead and timed-out executions per minute over the window ending at the next whole minute.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Incidents {
    start: DateTime<Utc>,
    dead: [u64; INCIDENT_MINUTES],
    timeout: [u64; INCIDENT_MINUTES],
}

impl Incidents {
    fn new(now: DateTime<Utc>) -> Self {
        let minute = Span::minutes(1);
        // The window ends at the end of the current minute, so the last bucket is "now".
        let end = now.duration_trunc(minute).unwrap_or(now) + minute;
        Self {
            start: end - Span::minutes(i64::try_from(INCIDENT_MINUTES).unwrap_or(i64::MAX)),
            dead: [0; INCIDENT_MINUTES],
            timeout: [0; INCIDENT_MINUTES],
        }
    }

    fn count(&mut self, record: &ExecutionRecord) {
        let series = match record.state {
            ExecutionState::Dead => &mut self.dead,
            ExecutionState::Timeout => &mut self.timeout,
            _ => return,
        };
        let Some(at) = record.completed_at else { return };
        if at < self.start {
            return;
        }
        let minutes = (at - self.start).num_minutes();
        if let Ok(index) = usize::try_from(minutes)
            && let Some(bucket) = series.get_mut(index)
        {
            *bucket += 1;
        }
    }
}

/// What the overview reads from the records in memory, built one record at a time.
#[derive(Debug)]
struct Summary {
    alive_by_state: BTreeMap<&'static str, u64>,
    incidents: Incidents,
    /// Seconds silent, and the execution as listed.
    stuck: Vec<(f64, Value)>,
    execution_breakers: Vec<Value>,
    now: DateTime<Utc>,
    stale_after: f64,
}

impl Summary {
    /// An empty summary as of `now`.
    fn new(now: DateTime<Utc>, heartbeat_timeout: std::time::Duration) -> Self {
        Self {
            alive_by_state: ExecutionState::ALL
                .iter()
                .filter(|s| s.is_alive())
                .map(|s| (s.as_str(), 0))
                .collect(),
            incidents: Incidents::new(now),
            stuck: Vec::new(),
            execution_breakers: Vec::new(),
            now,
            stale_after: heartbeat_timeout.as_secs_f64() / 2.0,
        }
    }

    /// Counts one record (already known to be in the caller's scope).
    fn add(&mut self, record: &ExecutionRecord) {
        if !record.is_alive() {
            self.incidents.count(record);
            return;
        }
        *self.alive_by_state.entry(record.state.as_str()).or_default() += 1;
        let silent = (self.now - record.last_heartbeat).as_seconds_f64();
        if silent > self.stale_after {
            self.stuck.push((
                silent,
                json!({
                    "execution_id": record.execution_id,
                    "agent_name": record.agent_name,
                    "user_id": record.user_id,
                    "thread_id": record.thread_id,
                    "state": record.state,
                    "current_phase": record.current_phase,
                    "last_heartbeat": record.last_heartbeat,
                    "seconds_since_heartbeat": silent,
                }),
            ));
        }
        if record.circuit_breaker_state != BreakerState::Closed {
            self.execution_breakers.push(json!({
                "execution_id": record.execution_id,
                "agent_name": record.agent_name,
                "state": record.circuit_breaker_state,
                "failure_count": record.circuit_breaker_failures,
                "next_attempt_time": record.next_attempt_time,
            }));
        }
    }

    /// The most silent executions first, at most [`STUCK_LIMIT`].
    fn stuck(&mut self) -> Vec<Value> {
        self.stuck.sort_by(|a, b| b.0.total_cmp(&a.0));
        self.stuck
            .drain(..)
            .take(STUCK_LIMIT)
            .map(|(_, listed)| listed)
            .collect()
    }
}

/// `part / whole`, or 0 when there is no whole.
#[allow(
    clippy::cast_precision_loss,
    reason = "a share of two counts is a float; counts past 2^53 only lose their lowest digits"
)]
pub(super) fn share(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// This node's part of an overview: the answer before any other node's parts are added, and
/// the phase samples its percentiles came from (a cluster recomputes them from every part's).
#[derive(Debug)]
struct Local {
    answer: Value,
    samples: HashMap<Phase, Vec<u64>>,
    /// Where the event log stood before the walk: every event up to here is reflected.
    positions: Positions,
}

/// Whose overview a walk was: (tenant, user) as [`Scope::counted`] gives them, which also fixes
/// the role (admin: neither, agent: a tenant, viewer: both).
type CacheKey = (Option<String>, Option<String>);

/// At most this many scopes' walks are kept; past it, those too old to be reused are dropped
/// (and all of them if none is).
const CACHED_SCOPES: usize = 4096;

/// Recent overviews by scope, reused for `quotas.overview_cache`: an overview walks every
/// record in memory (70 ms at 100,000 records in a release build on a loaded 2-core machine,
/// `walk_cost` below), so a client polling it in a loop would otherwise cost a core per 15
/// polls a second. A cache rather than incremental counters: the walk also lists the most
/// silent executions and buckets the last hour's incidents, which counters cannot keep cheaply.
/// Within the window every caller of the same scope gets the same numbers, `generated_at`
/// saying when they were taken.
#[derive(Debug, Default)]
pub struct OverviewCache {
    entries: Mutex<HashMap<CacheKey, (Instant, Arc<Local>)>>,
}

impl OverviewCache {
    /// A walk of `key`'s scope taken within `fresh_for` that reflects every event up to `since`.
    fn get(&self, key: &CacheKey, fresh_for: std::time::Duration, since: Option<&Positions>) -> Option<Arc<Local>> {
        let entries = self.entries.lock();
        let (taken, local) = entries.get(key)?;
        let covers = since.is_none_or(|since| local.positions.covers(since));
        (taken.elapsed() < fresh_for && covers).then(|| Arc::clone(local))
    }

    fn put(&self, key: CacheKey, local: &Arc<Local>, fresh_for: std::time::Duration) {
        let mut entries = self.entries.lock();
        if entries.len() >= CACHED_SCOPES {
            entries.retain(|_, (taken, _)| taken.elapsed() < fresh_for);
            if entries.len() >= CACHED_SCOPES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), Arc::clone(local)));
    }
}

async fn overview(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    parameters: Result<Query<Parameters>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(Parameters { since, unknown }) = parameters.map_err(ApiError::unreadable_query)?;
    if let Some(name) = unknown.keys().next() {
        return Err(ApiError::unknown_parameter(name, PARAMETERS));
    }
    let since = super::events::since_parameter(since, state.shards.count())?;
    let fresh_for = state.quotas.config.overview_cache;
    let (tenant, user) = scope.counted();
    let key: CacheKey = (tenant.map(str::to_owned), user.map(str::to_owned));
    let local = if let Some(local) = state.overview.get(&key, fresh_for, since.as_ref()) {
        state.metrics.overview_cache_hits.fetch_add(1, Ordering::Relaxed);
        local
    } else {
        state.metrics.overview_walks.fetch_add(1, Ordering::Relaxed);
        let local = Arc::new(walk(&state, &scope));
        if !fresh_for.is_zero() {
            state.overview.put(key, &local, fresh_for);
        }
        local
    };
    let mut answer = local.answer.clone();
    if gather::is_part_request(&headers) {
        cluster_wide::add_samples(&mut answer, &local.samples);
    } else if let Some(gathered) =
        gather::from_peers(&state, &scope, &headers, &peer_path(since.as_ref(), &state)).await
    {
        cluster_wide::overview(&mut answer, local.samples.clone(), &gathered, STUCK_LIMIT);
    }
    Ok(Json(answer))
}

/// What the other nodes are asked for: their parts reflecting the same events.
fn peer_path(since: Option<&Positions>, state: &AppState) -> String {
    match since {
        Some(since) => format!("/v1/overview?since={}", since.encode(state.shards.count())),
        None => "/v1/overview".to_owned(),
    }
}

/// This node's overview for `scope`, from its counters and a walk of its records in memory.
fn walk(state: &AppState, scope: &Scope) -> Local {
    // Read the watermark first: every event up to it is in the numbers below (the metrics count
    // an event when it commits, before publishing moves the watermark past it), and a stream
    // resumed from it repeats at worst a few events the client then ignores by `seq`.
    let positions = state.hub.positions();
    let event_seq = positions.get(0);
    let event_cursor = positions.encode(state.shards.count());
    let now = Utc::now();
    let (tenant, user) = scope.counted();
    let counts = state.metrics.counts(tenant, user);

    let heartbeat_timeout = state.shards.config().heartbeat_timeout;
    let mut summary = Summary::new(now, heartbeat_timeout);
    let samples = if let Some(user) = user {
        // A viewer's own executions are few: copied, for their phase samples too.
        let records: Vec<ExecutionRecord> = state
            .shards
            .by_user(user)
            .into_iter()
            .filter(|record| scope.sees(record))
            .collect();
        for record in &records {
            summary.add(record);
        }
        samples_of(&records)
    } else {
        // Everything in memory (up to the finished cap): visited in place, never copied.
        for tracker in state.shards.trackers() {
            tracker.visit(|record| {
                if scope.sees(record) {
                    summary.add(record);
                }
            });
        }
        state.metrics.phase_samples(tenant)
    };
    let stuck = summary.stuck();
    let Summary {
        alive_by_state,
        incidents,
        execution_breakers,
        ..
    } = summary;

    let breakers = if LIST_BREAKERS.admits(scope.role()) {
        visible_breakers(state, scope)
    } else {
        Vec::new()
    };

    let finished = counts.total.saturating_sub(counts.active);
    let grant = scope.grant();
    let answer = json!({
        "generated_at": now,
        "event_seq": event_seq,
        "event_cursor": event_cursor,
        "scope": {"role": grant.role, "tenant": tenant, "user_id": grant.user_id},
        "heartbeat_timeout_seconds": heartbeat_timeout.as_secs_f64(),
        "counts": counts,
        "alive_by_state": alive_by_state,
        "success_rate": share(counts.completed, finished),
        "failure_rate": share(counts.failed + counts.timeout + counts.dead, finished),
        "phase_durations_ms": phase_stats(samples.clone()),
        "incidents": {
            "start": incidents.start,
            "bucket_seconds": 60,
            "dead": incidents.dead.as_slice(),
            "timeout": incidents.timeout.as_slice(),
        },
        "stuck": stuck,
        "breakers": breakers,
        "execution_breakers": execution_breakers,
    });
    Local {
        answer,
        samples,
        positions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(tracker: &agentrack::Tracker, agent: &str) -> ExecutionRecord {
        let id = tracker
            .create(agentrack::NewExecution::new(agent, "t", "u"))
            .unwrap()
            .id();
        tracker.get(id).unwrap()
    }

    /// What one overview walk costs at 100,000 records in memory (the figure behind
    /// [`OverviewCache`]): `cargo test --release -p agentrack-server --lib walk_cost -- --ignored
    /// --nocapture`.
    #[test]
    #[ignore = "a measurement, run by hand in release"]
    fn walk_cost() {
        let tracker = agentrack::Tracker::new();
        for i in 0..100_000 {
            let new =
                agentrack::NewExecution::new("agent", format!("thread-{}", i % 1000), format!("user-{}", i % 100))
                    .tenant(if i % 2 == 0 { "a" } else { "b" });
            tracker.create(new).unwrap();
        }
        let scope = Scope::new(crate::auth::TokenGrant::new(crate::auth::Role::Agent, "a".into(), None, None).unwrap());
        let rounds = 20;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            let mut summary = Summary::new(Utc::now(), std::time::Duration::from_secs(10));
            tracker.visit(|record| {
                if scope.sees(record) {
                    summary.add(record);
                }
            });
            std::hint::black_box(summary.stuck());
        }
        println!("one walk of 100,000 records: {:?}", started.elapsed() / rounds);
    }

    #[test]
    fn incidents_fall_in_the_minute_they_happened_and_older_ones_are_dropped() {
        let now: DateTime<Utc> = "2026-01-01T12:30:20Z".parse().unwrap();
        let mut incidents = Incidents::new(now);
        assert_eq!(
            incidents.start,
            "2026-01-01T11:31:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let tracker = agentrack::Tracker::new();
        let mut base = record(&tracker, "a");
        let mut dead = base.clone();
        dead.state = ExecutionState::Dead;
        dead.completed_at = Some(now);
        incidents.count(&dead);
        base.state = ExecutionState::Timeout;
        base.completed_at = Some("2026-01-01T11:31:00Z".parse().unwrap());
        incidents.count(&base);
        base.completed_at = Some("2026-01-01T11:30:59Z".parse().unwrap());
        incidents.count(&base);
        assert_eq!(incidents.dead[INCIDENT_MINUTES - 1], 1);
        assert_eq!(incidents.timeout[0], 1);
        assert_eq!(
            incidents.dead.iter().sum::<u64>() + incidents.timeout.iter().sum::<u64>(),
            2
        );
    }

    #[test]
    fn silent_executions_are_stuck_most_silent_first_and_open_breakers_listed() {
        let tracker = agentrack::Tracker::new();
        let mut quiet = record(&tracker, "quiet");
        let mut quieter = record(&tracker, "quieter");
        let mut fresh = record(&tracker, "fresh");
        let mut finished = record(&tracker, "finished");
        let now = quiet.last_heartbeat + Span::seconds(60);
        quiet.last_heartbeat = now - Span::seconds(6);
        quiet.state = ExecutionState::Running;
        quiet.circuit_breaker_state = BreakerState::Open;
        quieter.last_heartbeat = now - Span::seconds(9);
        fresh.last_heartbeat = now - Span::seconds(4);
        finished.state = ExecutionState::Completed;
        finished.last_heartbeat = now - Span::seconds(30);
        let mut summary = Summary::new(now, std::time::Duration::from_secs(10));
        for record in [quiet, quieter, fresh, finished] {
            summary.add(&record);
        }
        let stuck = summary.stuck();
        let agents: Vec<&str> = stuck
            .iter()
            .map(|entry| entry["agent_name"].as_str().unwrap())
            .collect();
        assert_eq!(agents, ["quieter", "quiet"], "over 5 s of silence, alive only");
        assert_eq!(summary.alive_by_state["pending"], 2);
        assert_eq!(summary.alive_by_state["running"], 1);
        assert_eq!(summary.alive_by_state["completing"], 0);
        assert_eq!(summary.execution_breakers.len(), 1);
        assert_eq!(summary.execution_breakers[0]["agent_name"], "quiet");
        assert_eq!(summary.execution_breakers[0]["state"], "open");

        // The entries the HTTP tests cannot easily cause (an execution's own breaker opens only
        // through in-process calls) match the documented schema.
        let properties = &schema()["properties"];
        let validate = |part: &Value, instance: &Value| {
            let document = json!({"$schema": "https://json-schema.org/draft/2020-12/schema",
                "allOf": [part], "components": {"schemas": super::super::schemas::components()}});
            let validator = jsonschema::draft202012::options()
                .should_validate_formats(true)
                .build(&document)
                .unwrap();
            let errors: Vec<String> = validator.iter_errors(instance).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:?}: {instance}");
        };
        validate(&properties["stuck"]["items"], &stuck[0]);
        validate(
            &properties["execution_breakers"]["items"],
            &summary.execution_breakers[0],
        );
    }
}
