//! Tokens, roles, and the one place where isolation is decided.
//!
//! Every `/v1` request carries `Authorization: Bearer <token>`. A token is 32 random bytes
//! (`agt_` + 64 hex digits); only its SHA-256 is stored. Its grant says what it may do:
//!
//! - `admin`: everything, in every tenant;
//! - `agent`: create and update executions in its tenant, and read them;
//! - `viewer`: read the executions and events of one user in one tenant.
//!
//! Handlers never compare tenants or users themselves. They extract a [`Scope`] and ask it:
//! [`Scope::sees`] for one record, [`Scope::list_query`] / [`Scope::event_query`] /
//! [`Scope::event_filter`] for queries and subscriptions. Anything outside the scope looks exactly
//! like something that does not exist (404), never like something forbidden.

use std::sync::Arc;

use agentrack::{EventFilter, ExecutionId, ExecutionRecord, ParseEnumError};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::app::AppState;
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
    /// The tenant is empty.
    #[error("tenant must not be empty")]
    EmptyTenant,
}

impl TokenGrant {
    /// A grant made now, checked for consistency.
    ///
    /// # Errors
    ///
    /// A viewer without a user, a user on another role, or an empty tenant.
    pub fn new(role: Role, tenant: String, user_id: Option<String>, label: Option<String>) -> Result<Self, GrantError> {
        if tenant.trim().is_empty() {
            return Err(GrantError::EmptyTenant);
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

/// What the caller may see and do; extracted from the bearer token of every `/v1` request.
#[derive(Debug, Clone)]
pub struct Scope {
    grant: Arc<TokenGrant>,
}

fn bearer(parts: &Parts) -> Option<Result<String, ApiError>> {
    let header = parts.headers.get(axum::http::header::AUTHORIZATION)?;
    let value = match header.to_str() {
        Ok(value) => value,
        Err(_) => {
            return Some(Err(ApiError::unauthorized(
                "the Authorization header is not valid text",
            )));
        }
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

fn query_token(parts: &Parts) -> Option<String> {
    let query = parts.uri.query()?;
    url_pairs(query).find_map(|(key, value)| (key == "token").then_some(value))
}

/// Splits a query string into decoded pairs.
pub(crate) fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key), percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let decoded = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match decoded {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FromRequestParts<AppState> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = match bearer(parts) {
            Some(token) => token?,
            // Browsers cannot set headers on a WebSocket: the event stream also takes `?token=`.
            None if parts.uri.path() == "/v1/events" => query_token(parts)
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::unauthorized("a bearer token or ?token= is required"))?,
            None => return Err(ApiError::unauthorized("a bearer token is required")),
        };
        let grant = state
            .tokens
            .resolve(state.store.as_ref(), &token)
            .await?
            .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
        Ok(Self { grant })
    }
}

impl Scope {
    /// A scope for a grant (for tests and in-process callers).
    pub fn new(grant: TokenGrant) -> Self {
        Self { grant: Arc::new(grant) }
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

    fn forbidden(&self, action: &str) -> ApiError {
        ApiError::forbidden(format!("a {} token may not {action}", self.grant.role))
    }

    /// Admins only.
    ///
    /// # Errors
    ///
    /// 403 for anyone else.
    pub fn require_admin(&self, action: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(self.forbidden(action))
        }
    }

    /// Admins and agents: those that change executions and use breakers.
    ///
    /// # Errors
    ///
    /// 403 for viewers.
    pub fn require_writer(&self, action: &str) -> Result<(), ApiError> {
        match self.grant.role {
            Role::Admin | Role::Agent => Ok(()),
            Role::Viewer => Err(self.forbidden(action)),
        }
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

    /// Narrows a list query to the scope; `None` when the request asks for another user than a
    /// viewer's own (an empty result).
    pub fn list_query(&self, mut query: ListQuery) -> Option<ListQuery> {
        let (tenant, user) = self.bounds(query.user_id.as_deref())?;
        if tenant.is_some() {
            query.tenant = tenant;
        }
        if user.is_some() {
            query.user_id = user;
        }
        Some(query)
    }

    /// Narrows a stored-event query to the scope.
    pub fn event_query(&self, mut query: EventQuery) -> Option<EventQuery> {
        let (tenant, user) = self.bounds(query.user_id.as_deref())?;
        if tenant.is_some() {
            query.tenant = tenant;
        }
        if user.is_some() {
            query.user_id = user;
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
        match key.split_once('/') {
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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
    fn query_strings_are_decoded() {
        let pairs: Vec<_> = url_pairs("token=a%2Bb&thread_id=t+1&x").collect();
        assert_eq!(pairs[0], ("token".into(), "a+b".into()));
        assert_eq!(pairs[1], ("thread_id".into(), "t 1".into()));
        assert_eq!(pairs[2], ("x".into(), "".into()));
    }

    #[test]
    fn viewer_sees_only_its_user_in_its_tenant() {
        let scope = Scope::new(TokenGrant::new(Role::Viewer, "t1".into(), Some("alice".into()), None).unwrap());
        assert!(scope.sees_owner("t1", "alice"));
        assert!(!scope.sees_owner("t1", "bob"));
        assert!(!scope.sees_owner("t2", "alice"));
        assert!(
            scope
                .list_query(ListQuery {
                    user_id: Some("bob".into()),
                    ..ListQuery::default()
                })
                .is_none()
        );
    }
}
