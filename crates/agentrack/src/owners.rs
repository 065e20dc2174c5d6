//! Interned owners: one shared [`Owner`] per (tenant, user, thread, agent).
//!
//! Every execution and each of its events refer to their owner. Executions of one thread share
//! it, so rather than one `Owner` (four strings) per execution, the tracker keeps one per
//! distinct owner, counted by the executions that use it and dropped with the last of them.
//! Events hold their own reference and outlive the count without harm.

use std::hash::BuildHasher;
use std::sync::Arc;

use dashmap::DashMap;
use foldhash::fast::RandomState;

use crate::event::Owner;
use crate::id::IdHash;

/// One interned owner and how many executions use it.
#[derive(Debug)]
struct Interned {
    owner: Arc<Owner>,
    executions: usize,
}

/// The owners of the executions in memory, by a hash of their four keys. Each hash's list is
/// changed under that entry's shard lock, so acquiring and releasing the same owner from
/// several threads at once stays exact.
#[derive(Debug, Default)]
pub(crate) struct Owners {
    /// Keyed by a hash already: the map only needs to spread it.
    by_hash: DashMap<u64, Vec<Interned>, IdHash>,
    hasher: RandomState,
}

impl Owners {
    fn hash(&self, owner: &Owner) -> u64 {
        self.hasher
            .hash_one((&owner.tenant, &owner.user_id, &owner.thread_id, &owner.agent_name))
    }

    /// The shared `Owner` equal to `owner`, counting one more execution for it.
    pub(crate) fn acquire(&self, owner: Owner) -> Arc<Owner> {
        let hash = self.hash(&owner);
        let mut list = self.by_hash.entry(hash).or_default();
        if let Some(interned) = list.iter_mut().find(|interned| *interned.owner == owner) {
            interned.executions += 1;
            return Arc::clone(&interned.owner);
        }
        let shared = Arc::new(owner);
        list.push(Interned {
            owner: Arc::clone(&shared),
            executions: 1,
        });
        shared
    }

    /// Counts one execution fewer for `owner`; the last one drops it from the table.
    pub(crate) fn release(&self, owner: &Owner) {
        let hash = self.hash(owner);
        if let Some(mut list) = self.by_hash.get_mut(&hash) {
            if let Some(position) = list.iter().position(|interned| *interned.owner == *owner) {
                list[position].executions -= 1;
                if list[position].executions == 0 {
                    list.swap_remove(position);
                }
            }
        }
        self.by_hash.remove_if(&hash, |_, list| list.is_empty());
    }

    /// Every interned owner with its count; for consistency checks.
    pub(crate) fn counts(&self) -> Vec<(Arc<Owner>, usize)> {
        self.by_hash
            .iter()
            .flat_map(|entry| {
                entry
                    .value()
                    .iter()
                    .map(|interned| (Arc::clone(&interned.owner), interned.executions))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
