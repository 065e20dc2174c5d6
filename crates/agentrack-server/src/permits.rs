//! Breaker permits held on behalf of remote callers.
//!
//! `POST /v1/breakers/{name}/acquire` takes a [`Permit`] from a named breaker and keeps it here
//! under a random id until `POST /v1/breakers/{name}/record` reports the call's outcome. A caller
//! that never reports does not hold a half-open slot forever: permits expire after the breaker's
//! call timeout plus a grace, and are then released without counting anything.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentrack::{Event, Outcome, Permit};
use dashmap::DashMap;

/// One held permit.
#[derive(Debug)]
struct Held {
    permit: Permit,
    tenant: String,
    name: String,
    expires: Instant,
}

/// The permits in flight.
#[derive(Debug, Default)]
pub struct Permits {
    held: DashMap<String, Held>,
}

/// Why a permit could not be settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleError {
    /// Unknown, expired, already settled, or another tenant's or breaker's.
    NotFound,
}

impl Permits {
    /// Keeps `permit` for `tenant`'s breaker `name`; returns its id.
    pub fn hold(&self, permit: Permit, tenant: &str, name: &str, lifetime: Duration) -> String {
        let id = format!("pmt_{}", uuid::Uuid::new_v4().simple());
        self.held.insert(
            id.clone(),
            Held {
                permit,
                tenant: tenant.to_owned(),
                name: name.to_owned(),
                expires: Instant::now() + lifetime,
            },
        );
        id
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
        Ok(held.permit.record(outcome))
    }

    /// Drops expired permits (releasing their slots). Returns how many.
    pub fn expire(&self) -> usize {
        let now = Instant::now();
        let before = self.held.len();
        self.held.retain(|_, held| held.expires > now);
        before - self.held.len()
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
