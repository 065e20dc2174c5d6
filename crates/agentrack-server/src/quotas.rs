//! Per-tenant and per-token quotas: what one caller may hold at once, so that no tenant can grow
//! the server without bound or crowd the others out (`[quotas]`, see
//! [`QuotaConfig`]).
//!
//! Each check happens before anything changes, and a refusal is 429 `quota_exceeded` with
//! `Retry-After`, naming the quota, its config key, its limit and the current count
//! ([`ApiError::quota`]); `agentrack_quota_refusals_total{quota}` counts them. The counts are this
//! node's: alive executions and users from the per-user counters of the shards it serves (the
//! same the overview reads), named breakers from its shards' trackers, permits and streams from
//! its own tables. A check and the reservation it makes happen under one lock per tenant (per
//! token for streams), so concurrent requests never take a tenant past a limit.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::api::error::ApiError;
use crate::app::AppState;
use crate::auth::Scope;
use crate::cluster::LocalShard;
use crate::config::QuotaConfig;
use crate::metrics::ServerMetrics;

/// One quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Alive executions per tenant.
    Executions,
    /// Distinct users per tenant.
    Users,
    /// Named breakers per tenant.
    Breakers,
    /// Breaker permits held per tenant.
    Permits,
    /// Event streams per token.
    Subscribers,
}

impl Quota {
    /// Every quota, in the order of their refusal counters.
    pub const ALL: [Self; 5] = [
        Self::Executions,
        Self::Users,
        Self::Breakers,
        Self::Permits,
        Self::Subscribers,
    ];

    /// Its name, as error bodies and the refusal counter's label give it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Executions => "executions_per_tenant",
            Self::Users => "users_per_tenant",
            Self::Breakers => "breakers_per_tenant",
            Self::Permits => "permits_per_tenant",
            Self::Subscribers => "subscribers_per_token",
        }
    }

    /// Its config key.
    pub const fn key(self) -> &'static str {
        match self {
            Self::Executions => "quotas.executions_per_tenant",
            Self::Users => "quotas.users_per_tenant",
            Self::Breakers => "quotas.breakers_per_tenant",
            Self::Permits => "quotas.permits_per_tenant",
            Self::Subscribers => "quotas.subscribers_per_token",
        }
    }

    /// What it counts, for the refusal's message.
    const fn counts(self) -> &'static str {
        match self {
            Self::Executions => "alive executions in tenant",
            Self::Users => "users with executions in tenant",
            Self::Breakers => "named breakers in tenant",
            Self::Permits => "breaker permits held in tenant",
            Self::Subscribers => "event streams open with this token",
        }
    }

    /// Seconds a refused caller is asked to wait: about how soon the count can drop (an
    /// execution finishing, a permit expiring, a stream closing; users and breakers go only
    /// with retention or idleness).
    pub const fn retry_after(self) -> u64 {
        match self {
            Self::Executions | Self::Subscribers => 5,
            Self::Permits => 1,
            Self::Users | Self::Breakers => 60,
        }
    }

    /// Its limit under `config`.
    pub const fn limit(self, config: &QuotaConfig) -> usize {
        match self {
            Self::Executions => config.executions_per_tenant,
            Self::Users => config.users_per_tenant,
            Self::Breakers => config.breakers_per_tenant,
            Self::Permits => config.permits_per_tenant,
            Self::Subscribers => config.subscribers_per_token,
        }
    }

    /// The index of its refusal counter.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// Creations under way in one tenant: counted against its quotas until they are committed
/// (and so in the per-user counters).
#[derive(Debug, Default)]
struct Pending {
    executions: u64,
    new_users: u64,
}

/// The quotas' own bookkeeping (the counts kept elsewhere are read where they are).
#[derive(Debug)]
pub struct Quotas {
    /// The limits.
    pub config: QuotaConfig,
    metrics: Arc<ServerMetrics>,
    creating: DashMap<String, Pending>,
    /// Streams open per token (by the token's hash).
    streams: DashMap<String, usize>,
    /// Taken to add a named breaker, or to evict idle ones: the count across shards is exact.
    new_breakers: Mutex<()>,
}

impl Quotas {
    /// Quotas with these limits, refusals counted in `metrics`.
    pub fn new(config: QuotaConfig, metrics: Arc<ServerMetrics>) -> Self {
        Self {
            config,
            metrics,
            creating: DashMap::new(),
            streams: DashMap::new(),
            new_breakers: Mutex::new(()),
        }
    }

    /// The 429 for `quota` at `current`, counted.
    pub fn refuse(&self, quota: Quota, current: usize) -> ApiError {
        self.metrics.quota_refusals[quota.index()].fetch_add(1, Ordering::Relaxed);
        ApiError::quota(quota, quota.limit(&self.config), current, quota.counts())
    }

    /// Admits the creation of an execution of `user_id` in `tenant`: refused past the tenant's
    /// alive executions, or past its users when `user_id` is new to it. The creation counts
    /// until the returned guard is dropped (once it is durable, it is in the counters).
    ///
    /// # Errors
    ///
    /// 429 `quota_exceeded` naming `executions_per_tenant` or `users_per_tenant`.
    pub fn admit_execution(&self, tenant: &str, user_id: &str) -> Result<Creating<'_>, ApiError> {
        let mut pending = self.creating.entry(tenant.to_owned()).or_default();
        let tally = self.metrics.tally(tenant);
        let alive = usize::try_from(tally.alive + pending.executions).unwrap_or(usize::MAX);
        if alive >= self.config.executions_per_tenant {
            return Err(self.refuse(Quota::Executions, alive));
        }
        let new_user = !self.metrics.knows_user(tenant, user_id);
        if new_user {
            let users = usize::try_from(tally.users + pending.new_users).unwrap_or(usize::MAX);
            if users >= self.config.users_per_tenant {
                return Err(self.refuse(Quota::Users, users));
            }
            pending.new_users += 1;
        }
        pending.executions += 1;
        Ok(Creating {
            quotas: self,
            tenant: tenant.to_owned(),
            new_user,
        })
    }

    /// Admits one more event stream for `scope`'s token (a stream opened with a ticket counts
    /// against the token the ticket was made for); the stream counts until the returned slot is
    /// dropped. In-process callers (no token) are not counted.
    ///
    /// # Errors
    ///
    /// 429 `quota_exceeded` naming `subscribers_per_token`.
    pub fn open_stream(state: &AppState, scope: &Scope) -> Result<Option<StreamSlot>, ApiError> {
        let Some(key) = scope.token_hash() else {
            return Ok(None);
        };
        let quotas = &state.quotas;
        let mut open = quotas.streams.entry(key.clone()).or_default();
        if *open >= quotas.config.subscribers_per_token {
            let current = *open;
            drop(open);
            return Err(quotas.refuse(Quota::Subscribers, current));
        }
        *open += 1;
        Ok(Some(StreamSlot {
            state: state.clone(),
            key,
        }))
    }

    /// Streams open with the token whose hash is `key`.
    fn close_stream(&self, key: &str) {
        if let Some(mut open) = self.streams.get_mut(key) {
            *open = open.saturating_sub(1);
        }
        self.streams.remove_if(key, |_, open| *open == 0);
    }

    /// Marks `tenant`'s named breaker `key` (the tracker's name for it) used on `shard`, adding
    /// it when it is new: refused once the tenant has its limit of named breakers on this node.
    ///
    /// # Errors
    ///
    /// 429 `quota_exceeded` naming `breakers_per_tenant`.
    pub fn use_breaker(
        &self,
        shards: &[Arc<LocalShard>],
        shard: &LocalShard,
        tenant: &str,
        key: &str,
    ) -> Result<(), ApiError> {
        let now = Instant::now();
        if shard.named_breakers.touch(tenant, key, now) {
            return Ok(());
        }
        let _adding = self.new_breakers.lock();
        if shard.named_breakers.touch(tenant, key, now) {
            return Ok(());
        }
        let held: usize = shards.iter().map(|shard| shard.named_breakers.count(tenant)).sum();
        if held >= self.config.breakers_per_tenant {
            return Err(self.refuse(Quota::Breakers, held));
        }
        shard.named_breakers.insert(tenant, key, now);
        Ok(())
    }

    /// Drops the named breakers of `shards` unused for `quotas.breaker_idle` that are closed and
    /// hold no permit (an open or half-open one stays, whatever its age). Returns how many.
    pub fn evict_idle_breakers(&self, shards: &[Arc<LocalShard>]) -> usize {
        let Some(before) = Instant::now().checked_sub(self.config.breaker_idle) else {
            return 0;
        };
        let _evicting = self.new_breakers.lock();
        let mut evicted = 0;
        for shard in shards {
            for (tenant, key) in shard.named_breakers.idle_since(before) {
                if shard
                    .named_breakers
                    // One the tracker never made (its first use was refused) is simply forgotten.
                    .remove_if_idle(&tenant, &key, before, || {
                        !shard.tracker.has_breaker(&key) || shard.tracker.remove_unused_breaker(&key)
                    })
                {
                    evicted += 1;
                }
            }
        }
        self.metrics
            .breakers_evicted
            .fetch_add(u64::try_from(evicted).unwrap_or(u64::MAX), Ordering::Relaxed);
        evicted
    }
}

/// An execution being created, counted against its tenant's quotas until dropped.
#[derive(Debug)]
pub struct Creating<'a> {
    quotas: &'a Quotas,
    tenant: String,
    new_user: bool,
}

impl Drop for Creating<'_> {
    fn drop(&mut self) {
        if let Some(mut pending) = self.quotas.creating.get_mut(&self.tenant) {
            pending.executions = pending.executions.saturating_sub(1);
            if self.new_user {
                pending.new_users = pending.new_users.saturating_sub(1);
            }
        }
        self.quotas
            .creating
            .remove_if(&self.tenant, |_, pending| pending.executions == 0);
    }
}

/// One open event stream, counted against its token until dropped.
#[derive(Debug)]
pub struct StreamSlot {
    state: AppState,
    key: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.state.quotas.close_stream(&self.key);
    }
}

/// A shard's named breakers and when each was last used, by tenant: what the breaker quota
/// counts and what idle eviction reads. It lives and dies with the shard's tracker.
#[derive(Debug, Default)]
pub struct NamedBreakers {
    by_tenant: DashMap<String, HashMap<String, Instant>>,
}

impl NamedBreakers {
    /// Marks `key` used now; `false` when it is not known (new, or evicted).
    pub fn touch(&self, tenant: &str, key: &str, now: Instant) -> bool {
        self.by_tenant
            .get_mut(tenant)
            .and_then(|mut keys| keys.get_mut(key).map(|used| *used = now))
            .is_some()
    }

    fn insert(&self, tenant: &str, key: &str, now: Instant) {
        self.by_tenant
            .entry(tenant.to_owned())
            .or_default()
            .insert(key.to_owned(), now);
    }

    /// How many `tenant` has here.
    pub fn count(&self, tenant: &str) -> usize {
        self.by_tenant.get(tenant).map_or(0, |keys| keys.len())
    }

    /// The breakers last used before `before`, as (tenant, key).
    fn idle_since(&self, before: Instant) -> Vec<(String, String)> {
        self.by_tenant
            .iter()
            .flat_map(|entry| {
                let tenant = entry.key().clone();
                entry
                    .value()
                    .iter()
                    .filter(|(_, used)| **used < before)
                    .map(|(key, _)| (tenant.clone(), key.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Forgets `key` if it is still unused since `before` and `remove` (dropping it from the
    /// tracker) succeeds; the tenant's entry is held meanwhile, so a concurrent use either
    /// comes first (and keeps it) or finds it gone (and adds it afresh).
    fn remove_if_idle(&self, tenant: &str, key: &str, before: Instant, remove: impl FnOnce() -> bool) -> bool {
        let Some(mut keys) = self.by_tenant.get_mut(tenant) else {
            return false;
        };
        if keys.get(key).is_none_or(|used| *used >= before) || !remove() {
            return false;
        }
        keys.remove(key);
        let empty = keys.is_empty();
        drop(keys);
        if empty {
            self.by_tenant.remove_if(tenant, |_, keys| keys.is_empty());
        }
        true
    }
}
