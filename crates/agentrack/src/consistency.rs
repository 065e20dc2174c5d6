//! A self-check of the indexes, interned owners and counters against the records.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use crate::event::Owner;
use crate::id::ExecutionId;
use crate::record::ExecutionRecord;
use crate::tracker::Tracker;

impl Tracker {
    /// Checks the indexes, interned owners and counters against the records; returns what is wrong.
    /// For tests and debugging: it walks everything.
    pub fn check_consistency(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let records = self.all();
        let by_id: HashMap<ExecutionId, &ExecutionRecord> = records.iter().map(|r| (r.execution_id, r)).collect();
        for (name, index, key) in [
            (
                "agent",
                &self.inner.by_agent,
                (|r: &ExecutionRecord| r.agent_name.clone()) as fn(&ExecutionRecord) -> String,
            ),
            ("thread", &self.inner.by_thread, |r: &ExecutionRecord| {
                r.thread_id.clone()
            }),
            ("user", &self.inner.by_user, |r: &ExecutionRecord| r.user_id.clone()),
        ] {
            let entries = index.entries();
            if entries.len() != records.len() {
                problems.push(format!(
                    "{name} index has {} entries for {} records",
                    entries.len(),
                    records.len()
                ));
            }
            for (k, id) in entries {
                match by_id.get(&id) {
                    None => problems.push(format!("{name} index entry {k} → {id} has no record")),
                    Some(record) if key(record) != k => {
                        problems.push(format!("{name} index entry {k} → {id} has the wrong key"));
                    }
                    Some(_) => {}
                }
            }
        }
        let alive: Vec<ExecutionId> = records
            .iter()
            .filter(|r| r.is_alive())
            .map(|r| r.execution_id)
            .collect();
        let metrics = self.metrics();
        if metrics.active_executions != alive.len() as u64 {
            problems.push(format!(
                "active counter {} for {} alive records",
                metrics.active_executions,
                alive.len()
            ));
        }
        let finished = records.len() - alive.len();
        if self.inner.finished_count.load(Ordering::Relaxed) != finished {
            problems.push(format!(
                "finished counter {} for {finished} finished records",
                self.inner.finished_count.load(Ordering::Relaxed)
            ));
        }
        let mut owners: HashMap<Owner, usize> = HashMap::new();
        for record in &records {
            let owner = Owner {
                tenant: record.tenant.clone(),
                user_id: record.user_id.clone(),
                thread_id: record.thread_id.clone(),
                agent_name: record.agent_name.clone(),
            };
            *owners.entry(owner).or_default() += 1;
        }
        let interned = self.inner.owners.counts();
        if interned.len() != owners.len()
            || interned
                .iter()
                .any(|(owner, count)| owners.get(owner.as_ref()) != Some(count))
        {
            problems.push(format!(
                "{} interned owners for the {} distinct owners of the records",
                interned.len(),
                owners.len()
            ));
        }
        let sum = metrics.active_executions
            + metrics.successful_executions
            + metrics.failed_executions
            + metrics.timeout_executions
            + metrics.dead_executions
            + metrics.cancelled_executions;
        if sum != metrics.total_executions {
            problems.push(format!("metrics sum to {sum}, total is {}", metrics.total_executions));
        }
        problems
    }
}
