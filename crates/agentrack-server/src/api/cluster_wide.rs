//! Adding up the parts of a cluster-wide read ([`crate::cluster::gather`]): counts add, lists
//! merge, and phase percentiles are computed again from every node's samples (percentiles do
//! not add), which is why a node answering for its part adds its raw samples.

use std::collections::HashMap;

use agentrack::Phase;
use serde_json::{Value, json};

use crate::cluster::gather::Gathered;
use crate::metrics::phase_stats;

/// The field of a part answer that carries its phase-duration samples.
pub const SAMPLES_FIELD: &str = "phase_samples_ms";

/// The field of a cluster-wide answer that says which nodes it covers.
pub const NODES_FIELD: &str = "cluster";

/// Adds this node's raw samples to its part answer.
pub(crate) fn add_samples(answer: &mut Value, samples: &HashMap<Phase, Vec<u64>>) {
    answer[SAMPLES_FIELD] = json!(samples);
}

/// Every node's samples together: this node's and those of each part.
fn all_samples(mut samples: HashMap<Phase, Vec<u64>>, gathered: &Gathered) -> HashMap<Phase, Vec<u64>> {
    for (_, answer) in &gathered.answers {
        let Some(theirs) = answer.get(SAMPLES_FIELD).cloned() else {
            continue;
        };
        let theirs: HashMap<Phase, Vec<u64>> = serde_json::from_value(theirs).unwrap_or_default();
        for (phase, values) in theirs {
            samples.entry(phase).or_default().extend(values);
        }
    }
    samples
}

/// Adds the integers of `from`'s `keys` (or of all its keys) into `into`.
fn add_integers(into: &mut Value, from: &Value, keys: Option<&[&str]>) {
    let Some(from) = from.as_object() else { return };
    for (key, value) in from {
        if keys.is_some_and(|keys| !keys.contains(&key.as_str())) {
            continue;
        }
        let (Some(mine), Some(theirs)) = (into.get(key).and_then(Value::as_u64), value.as_u64()) else {
            continue;
        };
        into[key] = json!(mine + theirs);
    }
}

/// Appends the arrays `from[key]` to `into[key]`.
fn append(into: &mut Value, from: &Value, key: &str) {
    if let (Some(mine), Some(theirs)) = (into.get_mut(key).and_then(Value::as_array_mut), from[key].as_array()) {
        mine.extend(theirs.iter().cloned());
    }
}

/// Which nodes a cluster-wide answer covers.
fn nodes(gathered: &Gathered) -> Value {
    json!({"nodes_answered": 1 + gathered.answers.len(), "nodes_missing": gathered.missing})
}

/// The named breakers of every node (each breaker lives on one).
pub fn breakers(answer: &mut Value, gathered: &Gathered) {
    for (_, part) in &gathered.answers {
        append(answer, part, "breakers");
    }
    sort_breakers(&mut answer["breakers"]);
}

fn sort_breakers(breakers: &mut Value) {
    if let Some(list) = breakers.as_array_mut() {
        let key = |breaker: &Value| (breaker["tenant"].to_string(), breaker["name"].to_string());
        list.sort_by_key(key);
    }
}

const METRICS_COUNTS: [&str; 7] = [
    "total_executions",
    "active_executions",
    "successful_executions",
    "failed_executions",
    "timeout_executions",
    "dead_executions",
    "cancelled_executions",
];

/// `/v1/metrics` for the whole cluster from this node's answer and samples and the others'.
pub(crate) fn metrics(answer: &mut Value, samples: HashMap<Phase, Vec<u64>>, gathered: &Gathered) {
    for (_, part) in &gathered.answers {
        add_integers(answer, part, Some(&METRICS_COUNTS));
    }
    let count = |key: &str| answer[key].as_u64().unwrap_or(0);
    let total = count("total_executions");
    let failed = count("failed_executions") + count("timeout_executions") + count("dead_executions");
    answer["success_rate"] = json!(super::overview::share(count("successful_executions"), total));
    answer["failure_rate"] = json!(super::overview::share(failed, total));
    answer["phase_durations_ms"] = json!(phase_stats(all_samples(samples, gathered)));
}

/// `/v1/overview` for the whole cluster from this node's answer and samples and the others'.
pub(crate) fn overview(answer: &mut Value, samples: HashMap<Phase, Vec<u64>>, gathered: &Gathered, stuck_limit: usize) {
    for (_, part) in &gathered.answers {
        add_integers(&mut answer["counts"], &part["counts"], None);
        add_integers(&mut answer["alive_by_state"], &part["alive_by_state"], None);
        add_incidents(&mut answer["incidents"], &part["incidents"]);
        for list in ["stuck", "breakers", "execution_breakers"] {
            append(answer, part, list);
        }
    }
    if let Some(stuck) = answer["stuck"].as_array_mut() {
        let silent = |entry: &Value| entry["seconds_since_heartbeat"].as_f64().unwrap_or(0.0);
        stuck.sort_by(|a, b| silent(b).total_cmp(&silent(a)));
        stuck.truncate(stuck_limit);
    }
    sort_breakers(&mut answer["breakers"]);
    let counts = &answer["counts"];
    let count = |key: &str| counts[key].as_u64().unwrap_or(0);
    let finished = count("total").saturating_sub(count("active"));
    let failed = count("failed") + count("timeout") + count("dead");
    answer["success_rate"] = json!(super::overview::share(count("completed"), finished));
    answer["failure_rate"] = json!(super::overview::share(failed, finished));
    answer["phase_durations_ms"] = json!(phase_stats(all_samples(samples, gathered)));
    answer[NODES_FIELD] = nodes(gathered);
}

/// Adds another node's per-minute incidents, aligned by minute (its window may start a minute
/// apart, read at a minute's edge).
fn add_incidents(into: &mut Value, from: &Value) {
    let start = |incidents: &Value| {
        incidents["start"]
            .as_str()
            .and_then(|text| text.parse::<chrono::DateTime<chrono::Utc>>().ok())
    };
    let (Some(mine), Some(theirs)) = (start(into), start(from)) else {
        return;
    };
    let offset = (theirs - mine).num_minutes();
    for series in ["dead", "timeout"] {
        let Some(buckets) = into[series].as_array_mut() else {
            continue;
        };
        let Some(their_buckets) = from[series].as_array() else {
            continue;
        };
        for (index, count) in their_buckets.iter().enumerate() {
            let at = i64::try_from(index).unwrap_or(i64::MAX).saturating_add(offset);
            if let Some(bucket) = usize::try_from(at).ok().and_then(|at| buckets.get_mut(at)) {
                *bucket = json!(bucket.as_u64().unwrap_or(0) + count.as_u64().unwrap_or(0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered(answers: Vec<Value>) -> Gathered {
        Gathered {
            answers: answers
                .into_iter()
                .enumerate()
                .map(|(i, answer)| (format!("node-{i}"), answer))
                .collect(),
            missing: vec!["node-gone".into()],
        }
    }

    #[test]
    fn overview_parts_add_up_and_percentiles_come_from_every_sample() {
        let mut mine = json!({
            "counts": {"total": 3, "active": 1, "completed": 2, "failed": 0, "timeout": 0, "dead": 0, "cancelled": 0},
            "alive_by_state": {"running": 1, "pending": 0},
            "incidents": {"start": "2026-01-01T11:31:00Z", "bucket_seconds": 60, "dead": [0, 0, 1], "timeout": [0, 0, 0]},
            "stuck": [{"seconds_since_heartbeat": 6.0, "agent_name": "a"}],
            "breakers": [{"tenant": "t", "name": "z"}],
            "execution_breakers": [],
        });
        let theirs = json!({
            "counts": {"total": 2, "active": 1, "completed": 0, "failed": 1, "timeout": 0, "dead": 0, "cancelled": 0},
            "alive_by_state": {"running": 0, "pending": 1},
            // Read a minute later: its buckets are one to the left of ours.
            "incidents": {"start": "2026-01-01T11:32:00Z", "bucket_seconds": 60, "dead": [0, 1, 5], "timeout": [1, 0, 0]},
            "stuck": [{"seconds_since_heartbeat": 9.0, "agent_name": "b"}, {"seconds_since_heartbeat": 1.0, "agent_name": "c"}],
            "breakers": [{"tenant": "t", "name": "a"}],
            "execution_breakers": [{"execution_id": "x"}],
            "phase_samples_ms": {"thinking": [100, 300]},
        });
        let samples = HashMap::from([(Phase::Thinking, vec![200])]);
        overview(&mut mine, samples, &gathered(vec![theirs]), 2);
        assert_eq!(mine["counts"]["total"], 5);
        assert_eq!(mine["counts"]["failed"], 1);
        assert_eq!(mine["alive_by_state"], json!({"running": 1, "pending": 1}));
        assert_eq!(
            mine["incidents"]["dead"],
            json!([0, 0, 2]),
            "the 5 falls past our window"
        );
        assert_eq!(mine["incidents"]["timeout"], json!([0, 1, 0]));
        let agents: Vec<&str> = mine["stuck"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["agent_name"].as_str().unwrap())
            .collect();
        assert_eq!(agents, ["b", "a"], "most silent first, at most the limit");
        assert_eq!(mine["breakers"][0]["name"], "a");
        assert_eq!(mine["execution_breakers"].as_array().unwrap().len(), 1);
        assert_eq!(mine["phase_durations_ms"]["thinking"]["count"], 3);
        assert_eq!(mine["phase_durations_ms"]["thinking"]["p50"], 200);
        assert_eq!(mine["success_rate"], json!(2.0 / 3.0));
        assert_eq!(
            mine["cluster"],
            json!({"nodes_answered": 2, "nodes_missing": ["node-gone"]})
        );
    }

    #[test]
    fn metrics_parts_add_up_and_rates_follow() {
        let mut mine = json!({"total_executions": 2, "active_executions": 0, "successful_executions": 2,
            "failed_executions": 0, "timeout_executions": 0, "dead_executions": 0, "cancelled_executions": 0});
        let theirs = json!({"total_executions": 2, "active_executions": 0, "successful_executions": 0,
            "failed_executions": 0, "timeout_executions": 0, "dead_executions": 2, "cancelled_executions": 0,
            "success_rate": 0.0, "phase_samples_ms": {}});
        metrics(&mut mine, HashMap::new(), &gathered(vec![theirs]));
        assert_eq!(mine["total_executions"], 4);
        assert_eq!(mine["success_rate"], json!(0.5));
        assert_eq!(mine["failure_rate"], json!(0.5));
    }
}
