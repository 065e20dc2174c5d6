//! Breaker permits held on behalf of remote callers.
//!
//! `POST /v1/breakers/{name}/acquire` takes a [`Permit`] from a named breaker (and
//! `POST /v1/executions/{id}/breaker/acquire` a [`CallPermit`] from an execution's own) and keeps
//! it here under a random id until the matching `record` route reports the call's outcome. A caller
//! that never reports does not hold a half-open slot forever: permits expire after the breaker's
//! call timeout plus a grace, and are then released without counting anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentrack::{CallPermit, Event, Outcome, Permit};
use dashmap::DashMap;

/// A permit of either kind of breaker.
#[derive(Debug)]
pub enum HeldPermit {
    /// From a named breaker.
    Named(Permit),
    /// From an execution's own breaker.
    Execution(CallPermit),
}

impl HeldPermit {
    /// Reports the call's outcome; returns the breaker state change it caused, if any.
    fn record(self, outcome: Outcome) -> Option<Arc<Event>> {
        match self {
            Self::Named(permit) => permit.record(outcome),
            Self::Execution(permit) => permit.record(outcome).events.pop(),
        }
    }
}

impl From<Permit> for HeldPermit {
    fn from(permit: Permit) -> Self {
        Self::Named(permit)
    }
}

impl From<CallPermit> for HeldPermit {
    fn from(permit: CallPermit) -> Self {
        Self::Execution(permit)
    }
}

/// One held permit.
#[derive(Debug)]
struct Held {
    permit: HeldPermit,
    tenant: String,
    name: String,
    expires: Instant,
}

/// The permits in flight.
#[derive(Debug, Default)]
pub struct Permits {
    held: DashMap<String, Held>,
    /// Permits held or reserved per tenant (`quotas.permits_per_tenant`).
    per_tenant: DashMap<String, usize>,
}

/// Room for one more permit of a tenant, taken before the breaker is asked; given back when
/// dropped unless [`Reserved::hold`] keeps a permit in it.
#[derive(Debug)]
pub struct Reserved<'a> {
    permits: &'a Permits,
    tenant: String,
    kept: bool,
}

impl Reserved<'_> {
    /// Keeps `permit` for the tenant's breaker `name`; returns its id.
    pub fn hold(mut self, permit: impl Into<HeldPermit>, name: &str, lifetime: Duration) -> String {
        self.kept = true;
        let id = format!("pmt_{}", uuid::Uuid::new_v4().simple());
        self.permits.held.insert(
            id.clone(),
            Held {
                permit: permit.into(),
                tenant: std::mem::take(&mut self.tenant),
                name: name.to_owned(),
                expires: Instant::now() + lifetime,
            },
        );
        id
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.permits.release(&self.tenant);
        }
    }
}

/// Why a permit could not be settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleError {
    /// Unknown, expired, already settled, or another tenant's or breaker's.
    NotFound,
}

impl Permits {
    /// Room for one more permit of `tenant`, unless it holds `limit` already.
    ///
    /// # Errors
    ///
    /// How many it holds, when that is `limit` or more.
    pub fn reserve(&self, tenant: &str, limit: usize) -> Result<Reserved<'_>, usize> {
        let mut held = self.per_tenant.entry(tenant.to_owned()).or_default();
        if *held >= limit {
            return Err(*held);
        }
        *held += 1;
        Ok(Reserved {
            permits: self,
            tenant: tenant.to_owned(),
            kept: false,
        })
    }

    fn release(&self, tenant: &str) {
        if let Some(mut held) = self.per_tenant.get_mut(tenant) {
            *held = held.saturating_sub(1);
        }
        self.per_tenant.remove_if(tenant, |_, held| *held == 0);
    }

    /// Reports the outcome of the call made under permit `id`. Returns the event of the breaker
    /// state change the outcome caused, if any, for the caller to wait until it is durable.
    ///
    /// # Errors
    ///
    /// [`SettleError::NotFound`] unless `id` is a live permit of this tenant's breaker `name`.
    pub fn settle(
        &self,
        id: &str,
        tenant: Option<&str>,
        name: &str,
        outcome: Outcome,
    ) -> Result<Option<Arc<Event>>, SettleError> {
        let (_, held) = self
            .held
            .remove_if(id, |_, held| {
                held.name == name && tenant.is_none_or(|t| t == held.tenant) && held.expires > Instant::now()
            })
            .ok_or(SettleError::NotFound)?;
        self.release(&held.tenant);
        Ok(held.permit.record(outcome))
    }

    /// Drops expired permits (releasing their slots). Returns how many.
    pub fn expire(&self) -> usize {
        let now = Instant::now();
        let mut expired = Vec::new();
        self.held.retain(|_, held| {
            let live = held.expires > now;
            if !live {
                expired.push(held.tenant.clone());
            }
            live
        });
        for tenant in &expired {
            self.release(tenant);
        }
        expired.len()
    }

    /// How many permits are held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none are held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}
