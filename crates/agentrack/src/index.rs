//! Secondary indexes: executions by agent, thread and user.

use std::collections::BTreeSet;

use dashmap::DashMap;
use foldhash::fast::RandomState;

use crate::id::ExecutionId;

/// A key → set of ids map. Updates to one key happen under that key's shard lock, and an empty
/// set is removed under the same lock, so concurrent creates and removals never leave a stale
/// entry behind.
///
/// The sets are ordered: ids grow with creation time, so a create appends at the set's right
/// edge and a purge of old records removes at its left edge, both on a path of nodes that stays
/// in cache, where a hash set of 100,000 ids missed the cache on nearly every insert. Reads come
/// out in creation order without sorting.
#[derive(Debug, Default)]
pub(crate) struct Index {
    map: DashMap<String, BTreeSet<ExecutionId>, RandomState>,
}

impl Index {
    pub(crate) fn insert(&self, key: &str, id: ExecutionId) {
        match self.map.get_mut(key) {
            Some(mut ids) => {
                ids.insert(id);
            }
            None => {
                self.map.entry(key.to_owned()).or_default().insert(id);
            }
        }
    }

    pub(crate) fn remove(&self, key: &str, id: ExecutionId) {
        let emptied = match self.map.get_mut(key) {
            Some(mut ids) => {
                ids.remove(&id);
                ids.is_empty()
            }
            None => false,
        };
        // Looked up again only for the last id of a key; rechecked under the lock, since a
        // create may have added one in between.
        if emptied {
            self.map.remove_if(key, |_, ids| ids.is_empty());
        }
    }

    /// The ids under `key`, in creation order.
    pub(crate) fn get(&self, key: &str) -> Vec<ExecutionId> {
        self.map
            .get(key)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Every (key, id) pair; for consistency checks.
    pub(crate) fn entries(&self) -> Vec<(String, ExecutionId)> {
        self.map
            .iter()
            .flat_map(|entry| {
                entry
                    .value()
                    .iter()
                    .map(|id| (entry.key().clone(), *id))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
