//! Tokens, roles, and the one place where isolation is decided.
//!
//! Every `/v1` request carries `Authorization: Bearer <token>`. A token is 32 random bytes
//! (`agt_` + 64 hex digits); only its SHA-256 is stored. Its grant says what it may do:
//!
//! - `admin`: everything, in every tenant;
//! - `agent`: create and update executions in its tenant, and read them;
//! - `viewer`: read the executions and events of one user in one tenant.
//!
//! Which roles may call a route is the route table's business ([`crate::api::access`]). Within a
//! route, handlers never compare tenants or users themselves. They extract a [`Scope`] and ask
//! it: [`Scope::sees`] for one record, [`Scope::narrow`] and [`Scope::event_filter`] for queries
//! and subscriptions. Anything outside the scope looks exactly like something that does not
//! exist (404), never like something forbidden.

use std::sync::Arc;

use agentrack::{EventFilter, ExecutionId, ExecutionRecord, ParseEnumError};
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::app::AppState;
use crate::names::{self, NameError, NameKind};
use crate::store::{EventQuery, ListQuery, Store};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, in every tenant.
    Admin,
    /// Create, update and read executions of its tenant.
    Agent,
    /// Read the executions and events of one user of one tenant.
    Viewer,
}

impl Role {
    /// Every role's name.
    pub const VALUES: &'static [&'static str] = &["admin", "agent", "viewer"];

    /// The role's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Agent => "agent",
            Self::Viewer => "viewer",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = ParseEnumError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "agent" => Ok(Self::Agent),
            "viewer" => Ok(Self::Viewer),
            _ => Err(ParseEnumError {
                kind: "role",
                found: format!("{s:?}"),
                valid: Self::VALUES,
            }),
        }
    }
}

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenGrant {
    /// The role.
    pub role: Role,
    /// The tenant it acts in.
    pub tenant: String,
    /// For viewers: the one user whose executions it may read.
    pub user_id: Option<String>,
    /// A free-form note.
    pub label: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// Why a grant is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// A viewer token needs a user id.
    #[error("a viewer token needs a user_id")]
    ViewerWithoutUser,
    /// Only viewer tokens are bound to a user.
    #[error("only viewer tokens are bound to a user_id")]
    UserOnNonViewer,
    /// The tenant or the user id breaks the names' rule ([`crate::names`]).
    #[error("{field} is not a valid name: {error}")]
    InvalidName {
        /// `tenant` or `user_id`.
        field: &'static str,
        /// What is wrong.
        error: NameError,
    },
}

impl TokenGrant {
    /// A grant made now, checked for consistency.
    ///
    /// # Errors
    ///
    /// A viewer without a user, a user on another role, or a tenant or user id that is not a
    /// valid name.
    pub fn new(role: Role, tenant: String, user_id: Option<String>, label: Option<String>) -> Result<Self, GrantError> {
        names::check(NameKind::Tenant, &tenant).map_err(|error| GrantError::InvalidName { field: "tenant", error })?;
        if let Some(user_id) = &user_id {
            names::check(NameKind::User, user_id).map_err(|error| GrantError::InvalidName {
                field: "user_id",
                error,
            })?;
        }
        match (role, &user_id) {
            (Role::Viewer, None) => return Err(GrantError::ViewerWithoutUser),
            (Role::Admin | Role::Agent, Some(_)) => return Err(GrantError::UserOnNonViewer),
            _ => {}
        }
        Ok(Self {
            role,
            tenant,
            user_id,
            label,
            created_at: Utc::now(),
        })
    }
}

/// A fresh random token.
///
/// # Errors
///
/// The operating system's random source failed.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("agt_{}", hex(&bytes)))
}

/// The stored form of a token: its SHA-256 in lower-case hex.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// Known tokens by hash; misses fall through to the store.
#[derive(Debug, Default)]
pub struct TokenCache {
    grants: DashMap<String, Arc<TokenGrant>>,
}

impl TokenCache {
    /// Remembers a grant.
    pub fn insert(&self, hash: String, grant: TokenGrant) {
        self.grants.insert(hash, Arc::new(grant));
    }

    /// The grant of `token`, from memory or the store.
    ///
    /// # Errors
    ///
    /// A store error.
    pub async fn resolve(&self, store: &dyn Store, token: &str) -> Result<Option<Arc<TokenGrant>>, ApiError> {
        let hash = hash_token(token);
        if let Some(grant) = self.grants.get(&hash) {
            return Ok(Some(Arc::clone(grant.value())));
        }
        let Some(grant) = store.token(hash.clone()).await.map_err(ApiError::store)? else {
            return Ok(None);
        };
        let grant = Arc::new(grant);
        self.grants.insert(hash, Arc::clone(&grant));
        Ok(Some(grant))
    }
}

/// What the caller may see and do: the grant of the request's token, resolved once per request
/// by the route's access guard.
#[derive(Clone)]
pub struct Scope {
    grant: Arc<TokenGrant>,
    /// The token as presented, to act for the caller on the node that owns a shard (a batch of
    /// heartbeats spanning nodes); `None` for in-process callers.
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for Scope {
    // The token stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

fn bearer(headers: &HeaderMap) -> Option<Result<String, ApiError>> {
    let header = headers.get(axum::http::header::AUTHORIZATION)?;
    let Ok(value) = header.to_str() else {
        return Some(Err(ApiError::unauthorized(
            "the Authorization header is not valid text",
        )));
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim);
    Some(match token {
        Some(token) if !token.is_empty() => Ok(token.to_owned()),
        _ => Err(ApiError::unauthorized("expected `Authorization: Bearer <token>`")),
    })
}

/// The one query parameter the guard reads; the handler reads (and checks) the others.
#[derive(Debug, Deserialize)]
struct TokenParameter {
    token: Option<String>,
}

fn query_token_of(uri: &Uri) -> Result<Option<String>, ApiError> {
    let Query(TokenParameter { token }) = Query::try_from_uri(uri)
        .map_err(|rejection| ApiError::unauthorized(format!("?token= cannot be read: {}", rejection.body_text())))?;
    Ok(token.filter(|token| !token.is_empty()))
}

/// The [`Scope`] that [`crate::api::access::guard`] resolved for this request.
///
/// Only routes whose access level needs a token have one: a handler of a public route that asks
/// for a `Scope` is a mistake in the route table, answered with a 500 rather than an unchecked
/// caller.
impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Self>().cloned().ok_or_else(|| {
            ApiError::internal(format!(
                "{} {} reads the caller's scope but its route is public",
                parts.method,
                parts.uri.path()
            ))
        })
    }
}

impl Scope {
    /// The scope of the request's token: its `Authorization: Bearer` header, or with
    /// `query_token` (the event stream, which browsers open without headers) `?token=`.
    ///
    /// # Errors
    ///
    /// 401 for a missing, malformed or unknown token; 503 when the store cannot be read.
    pub async fn authenticate(
        state: &AppState,
        headers: &HeaderMap,
        uri: &Uri,
        query_token: bool,
    ) -> Result<Self, ApiError> {
        let token = match bearer(headers) {
            Some(token) => token?,
            None if query_token => {
                query_token_of(uri)?.ok_or_else(|| ApiError::unauthorized("a bearer token or ?token= is required"))?
            }
            None => return Err(ApiError::unauthorized("a bearer token is required")),
        };
        let grant = state
            .tokens
            .resolve(state.store.as_ref(), &token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
        Ok(Self {
            grant,
            token: Some(token.into()),
        })
    }

    /// A scope for a grant (for tests and in-process callers).
    pub fn new(grant: TokenGrant) -> Self {
        Self {
            grant: Arc::new(grant),
            token: None,
        }
    }

    /// The token the caller presented, if it came over the network.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The caller's grant.
    pub fn grant(&self) -> &TokenGrant {
        &self.grant
    }

    /// The caller's role.
    pub fn role(&self) -> Role {
        self.grant.role
    }

    /// The caller's tenant.
    pub fn tenant(&self) -> &str {
        &self.grant.tenant
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.grant.role == Role::Admin
    }

    /// Whether an execution owned by `tenant` and `user_id` is visible.
    pub fn sees_owner(&self, tenant: &str, user_id: &str) -> bool {
        match self.grant.role {
            Role::Admin => true,
            Role::Agent => tenant == self.grant.tenant,
            Role::Viewer => tenant == self.grant.tenant && self.grant.user_id.as_deref() == Some(user_id),
        }
    }

    /// Whether `record` is visible.
    pub fn sees(&self, record: &ExecutionRecord) -> bool {
        self.sees_owner(&record.tenant, &record.user_id)
    }

    /// `record` if visible, else the 404 an unknown id gets.
    ///
    /// # Errors
    ///
    /// 404 when outside the scope.
    pub fn visible(&self, record: ExecutionRecord) -> Result<ExecutionRecord, ApiError> {
        if self.sees(&record) {
            Ok(record)
        } else {
            Err(ApiError::not_found(record.execution_id))
        }
    }

    /// The tenant a new execution belongs to: the caller's, or for an admin the one it names.
    ///
    /// # Errors
    ///
    /// 403 when a non-admin names another tenant.
    pub fn owning_tenant(&self, requested: Option<String>) -> Result<String, ApiError> {
        match requested {
            Some(tenant) if tenant != self.grant.tenant && !self.is_admin() => Err(ApiError::forbidden(format!(
                "a {} token of tenant {:?} may not create executions in tenant {tenant:?}",
                self.grant.role, self.grant.tenant
            ))),
            Some(tenant) => Ok(tenant),
            None => Ok(self.grant.tenant.clone()),
        }
    }

    /// Narrows a store query (of executions or of events) to the scope; `None` when it asks
    /// for another user than a viewer's own (an empty result).
    pub fn narrow<Q: OwnerBounds>(&self, mut query: Q) -> Option<Q> {
        let (tenant, user_id) = query.owner_mut();
        let (bound_tenant, bound_user) = self.bounds(user_id.as_deref())?;
        if bound_tenant.is_some() {
            *tenant = bound_tenant;
        }
        if bound_user.is_some() {
            *user_id = bound_user;
        }
        Some(query)
    }

    /// The live-event filter for a subscription, narrowed to the scope.
    pub fn event_filter(&self, thread_id: Option<String>, execution_id: Option<ExecutionId>) -> EventFilter {
        let (tenant, user_id) = match self.grant.role {
            Role::Admin => (None, None),
            Role::Agent => (Some(self.grant.tenant.clone()), None),
            Role::Viewer => (Some(self.grant.tenant.clone()), self.grant.user_id.clone()),
        };
        EventFilter {
            tenant,
            user_id,
            thread_id,
            execution_id,
        }
    }

    /// The tenant and user whose executions the caller may count: (`None`, `None`) for an
    /// admin (everything), (tenant, `None`) for an agent, (tenant, user) for a viewer.
    pub fn counted(&self) -> (Option<&str>, Option<&str>) {
        match self.grant.role {
            Role::Admin => (None, None),
            Role::Agent => (Some(&self.grant.tenant), None),
            Role::Viewer => (Some(&self.grant.tenant), self.grant.user_id.as_deref()),
        }
    }

    /// The tracker's name for the caller's named breaker `name`: breakers belong to tenants.
    pub fn breaker_key(&self, name: &str) -> String {
        format!("{}/{name}", self.grant.tenant)
    }

    /// Whether the caller may see the named breaker the tracker holds as `key`.
    pub fn sees_breaker(&self, key: &str) -> bool {
        // The last '/' separates: a breaker name has none, while a tenant made before the names'
        // rule may ("acme/eu" must not see into "acme").
        match key.rsplit_once('/') {
            Some((tenant, _)) => self.is_admin() || tenant == self.grant.tenant,
            // Per-execution breakers are reached through their execution.
            None => false,
        }
    }

    /// The tenant and user a query must be limited to; `None` if it can match nothing.
    fn bounds(&self, requested_user: Option<&str>) -> Option<(Option<String>, Option<String>)> {
        match self.grant.role {
            Role::Admin => Some((None, None)),
            Role::Agent => Some((Some(self.grant.tenant.clone()), None)),
            Role::Viewer => {
                let own = self.grant.user_id.clone();
                if requested_user.is_some_and(|user| Some(user) != own.as_deref()) {
                    return None;
                }
                Some((Some(self.grant.tenant.clone()), own))
            }
        }
    }
}

/// A store query limited by owner, which [`Scope::narrow`] bounds to the caller's scope.
pub trait OwnerBounds {
    /// The query's tenant and user filters.
    fn owner_mut(&mut self) -> (&mut Option<String>, &mut Option<String>);
}

impl OwnerBounds for ListQuery {
    fn owner_mut(&mut self) -> (&mut Option<String>, &mut Option<String>) {
        (&mut self.tenant, &mut self.user_id)
    }
}

impl OwnerBounds for EventQuery {
    fn owner_mut(&mut self) -> (&mut Option<String>, &mut Option<String>) {
        (&mut self.tenant, &mut self.user_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed_to_hex() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("agt_") && a.len() == 68);
        assert_eq!(hash_token(&a).len(), 64);
        assert_eq!(hash_token(&a), hash_token(&a));
    }

    #[test]
    fn viewer_sees_only_its_user_in_its_tenant() {
        let scope = Scope::new(TokenGrant::new(Role::Viewer, "t1".into(), Some("alice".into()), None).unwrap());
        assert!(scope.sees_owner("t1", "alice"));
        assert!(!scope.sees_owner("t1", "bob"));
        assert!(!scope.sees_owner("t2", "alice"));
        assert!(
            scope
                .narrow(ListQuery {
                    user_id: Some("bob".into()),
                    ..ListQuery::default()
                })
                .is_none()
        );
    }
}
