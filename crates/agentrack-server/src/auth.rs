//! Tokens, roles, and the one place where isolation is decided.
//!
//! Every `/v1` request carries `Authorization: Bearer <token>`. A token is 32 random bytes
//! (`agt_` + 64 hex digits); only its SHA-256 is stored. Its grant says what it may do:
//!
//! - `admin`: everything, in every tenant;
//! - `agent`: create and update executions in its tenant, and read them;
//! - `viewer`: read the executions and events of one user in one tenant;
//! - `metrics`: read `/metrics` (the Prometheus text) and nothing else.
//!
//! A token may expire (`expires_at`) and may be revoked; either way it is refused from the next
//! request on. Which tokens are valid is cached per node ([`TokenCache`]), and so are refusals
//! (bounded in size and time), so that a flood of the same unknown token costs one store query.
//!
//! Which roles may call a route is the route table's business ([`crate::api::access`]). Within a
//! route, handlers never compare tenants or users themselves. They extract a [`Scope`] and ask
//! it: [`Scope::sees`] for one record, [`Scope::narrow`] and [`Scope::event_filter`] for queries
//! and subscriptions. Anything outside the scope looks exactly like something that does not
//! exist (404), never like something forbidden.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agentrack::{EventFilter, ExecutionId, ExecutionRecord, ParseEnumError};
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Uri};
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use hashlink::LruCache;
use parking_lot::Mutex;
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
    /// Read the server's Prometheus metrics, nothing else.
    Metrics,
}

impl Role {
    /// Every role's name.
    pub const VALUES: &'static [&'static str] = &["admin", "agent", "viewer", "metrics"];

    /// The role's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Agent => "agent",
            Self::Viewer => "viewer",
            Self::Metrics => "metrics",
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
            "metrics" => Ok(Self::Metrics),
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
    /// When it stops being accepted, if ever.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
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
            (Role::Admin | Role::Agent | Role::Metrics, Some(_)) => return Err(GrantError::UserOnNonViewer),
            _ => {}
        }
        Ok(Self {
            role,
            tenant,
            user_id,
            label,
            created_at: Utc::now(),
            expires_at: None,
        })
    }

    /// Whether the grant has expired at `now`.
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// A stored token as `GET /v1/tokens` lists it: never the token, nor its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Its public id ([`token_id`]).
    pub id: String,
    /// What it grants.
    pub grant: TokenGrant,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenInfo {
    /// The JSON the API shows (the `TokenInfo` schema), as of `now`.
    pub fn to_json(&self, now: DateTime<Utc>) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "role": self.grant.role,
            "tenant": self.grant.tenant,
            "user_id": self.grant.user_id,
            "label": self.grant.label,
            "created_at": self.grant.created_at,
            "expires_at": self.grant.expires_at,
            "revoked_at": self.revoked_at,
            "active": self.revoked_at.is_none() && !self.grant.expired(now),
        })
    }
}

/// A token's public id, derived from its hash: `tok_` and the hash's first 16 hex digits. It
/// names the token in lists and revocations without revealing it (the hash is one-way, and 16
/// digits of it are not enough to look the token up by).
pub fn token_id(hash: &str) -> String {
    format!("tok_{}", hash.get(..16).unwrap_or(hash))
}

/// Whether `text` has the shape of a token or ticket with `prefix`: the prefix and 64 lower-case
/// hex digits. Anything else is refused without a store query.
fn well_formed(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix)
        .is_some_and(|digits| digits.len() == 64 && digits.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// A fresh random token.
///
/// # Errors
///
/// The operating system's random source failed.
pub fn generate_token() -> Result<String, getrandom::Error> {
    random_secret(TOKEN_PREFIX)
}

/// A fresh random event-stream ticket (see [`crate::api::events`]).
///
/// # Errors
///
/// The operating system's random source failed.
pub fn generate_ticket() -> Result<String, getrandom::Error> {
    random_secret(TICKET_PREFIX)
}

const TOKEN_PREFIX: &str = "agt_";
const TICKET_PREFIX: &str = "tkt_";

fn random_secret(prefix: &str) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!("{prefix}{}", hex(&bytes)))
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

/// How long a valid token is trusted from the cache before the store is asked again: a safety
/// net only. Revocations reach every node at once (the revoking node tells the others, and the
/// store notifies every node), and a node that lost its notifications forgets every token.
pub const VALID_RECHECK: Duration = Duration::from_secs(300);

/// The bounds of the cache of refused tokens (`[tokens]` in the configuration).
#[derive(Debug, Clone, Copy)]
pub struct RefusedBounds {
    /// Refused token hashes remembered; past it the least recently seen is forgotten.
    pub capacity: usize,
    /// How long a refusal is remembered.
    pub ttl: Duration,
}

impl Default for RefusedBounds {
    fn default() -> Self {
        Self {
            capacity: 10_000,
            ttl: Duration::from_secs(60),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a token's shape (`agt_` and 64 hex digits).
    Malformed,
    /// Unknown or revoked.
    Unknown,
    /// Past its expiry.
    Expired,
}

impl Refusal {
    fn error(self) -> ApiError {
        ApiError::unauthorized(match self {
            Self::Malformed => "malformed token: expected agt_ and 64 hex digits",
            Self::Unknown => "unknown or revoked token",
            Self::Expired => "the token has expired",
        })
    }
}

/// Counters of token resolution, for `/metrics`.
#[derive(Debug, Default)]
pub struct TokenStats {
    /// Store queries for a token (cache misses).
    pub store_lookups: AtomicU64,
    /// Refusals answered from the cache of refused tokens, without a store query.
    pub refused_from_cache: AtomicU64,
    /// Tokens refused for their shape, without a store query.
    pub refused_malformed: AtomicU64,
}

#[derive(Debug)]
struct Valid {
    grant: Arc<TokenGrant>,
    checked: Instant,
}

/// Tokens by hash, valid and refused; misses fall through to the store.
///
/// Evictions (a revocation, a token made here or elsewhere) bump a generation, and a store answer
/// is cached only if no eviction happened while it was read: a lookup that raced a revocation
/// can never put the revoked grant back.
#[derive(Debug)]
pub struct TokenCache {
    valid: DashMap<String, Valid>,
    refused: Mutex<LruCache<String, Instant>>,
    bounds: RefusedBounds,
    generation: AtomicU64,
    /// Counters for `/metrics`.
    pub stats: TokenStats,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(RefusedBounds::default())
    }
}

impl TokenCache {
    /// An empty cache remembering refusals within `bounds`.
    pub fn new(bounds: RefusedBounds) -> Self {
        Self {
            valid: DashMap::new(),
            refused: Mutex::new(LruCache::new(bounds.capacity.max(1))),
            bounds,
            generation: AtomicU64::new(0),
            stats: TokenStats::default(),
        }
    }

    /// Remembers a grant (a token just made here).
    pub fn insert(&self, hash: String, grant: TokenGrant) {
        self.forget(&hash);
        self.valid.insert(
            hash,
            Valid {
                grant: Arc::new(grant),
                checked: Instant::now(),
            },
        );
    }

    /// Forgets what is known of the token of `hash`, valid or refused (it was made or revoked,
    /// here or on another node).
    pub fn forget(&self, hash: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.valid.remove(hash);
        self.refused.lock().remove(hash);
    }

    /// Forgets the token whose public id is `id`.
    pub fn forget_id(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.valid.retain(|hash, _| token_id(hash) != id);
    }

    /// Forgets everything (notifications of other nodes' changes may have been missed).
    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.valid.clear();
        self.refused.lock().clear();
    }

    /// How many refusals are remembered now.
    pub fn refused_len(&self) -> usize {
        self.refused.lock().len()
    }

    /// The grant of `token`, from memory or the store.
    ///
    /// # Errors
    ///
    /// 401 naming why it is refused; 503 when the store cannot be read.
    pub async fn resolve(&self, store: &dyn Store, token: &str) -> Result<Arc<TokenGrant>, ApiError> {
        if !well_formed(token, TOKEN_PREFIX) {
            self.stats.refused_malformed.fetch_add(1, Ordering::Relaxed);
            return Err(Refusal::Malformed.error());
        }
        self.resolve_hash(store, hash_token(token)).await
    }

    /// The grant of the token whose hash is `hash`.
    ///
    /// # Errors
    ///
    /// 401 naming why it is refused; 503 when the store cannot be read.
    pub async fn resolve_hash(&self, store: &dyn Store, hash: String) -> Result<Arc<TokenGrant>, ApiError> {
        let grant = self.grant(store, hash).await?.map_err(Refusal::error)?;
        if grant.expired(Utc::now()) {
            return Err(Refusal::Expired.error());
        }
        Ok(grant)
    }

    async fn grant(&self, store: &dyn Store, hash: String) -> Result<Result<Arc<TokenGrant>, Refusal>, ApiError> {
        if let Some(valid) = self.valid.get(&hash)
            && valid.checked.elapsed() < VALID_RECHECK
        {
            return Ok(Ok(Arc::clone(&valid.grant)));
        }
        if let Some(refused) = self.refused.lock().get(&hash)
            && refused.elapsed() < self.bounds.ttl
        {
            self.stats.refused_from_cache.fetch_add(1, Ordering::Relaxed);
            return Ok(Err(Refusal::Unknown));
        }
        let generation = self.generation.load(Ordering::SeqCst);
        self.stats.store_lookups.fetch_add(1, Ordering::Relaxed);
        let found = store.token(hash.clone()).await.map_err(ApiError::store)?;
        let unchanged = || self.generation.load(Ordering::SeqCst) == generation;
        let Some(grant) = found else {
            self.valid.remove(&hash);
            if unchanged() {
                self.refused.lock().insert(hash, Instant::now());
            }
            return Ok(Err(Refusal::Unknown));
        };
        let grant = Arc::new(grant);
        if unchanged() {
            self.valid.insert(
                hash,
                Valid {
                    grant: Arc::clone(&grant),
                    checked: Instant::now(),
                },
            );
        }
        Ok(Ok(grant))
    }

    /// The cache's lines of the Prometheus text.
    pub fn prometheus(&self, labels: &str) -> String {
        use std::fmt::Write as _;
        let counter = |name: &str, help: &str, value: u64| {
            format!("# HELP {name} {help}\n# TYPE {name} counter\n{name}{labels} {value}\n")
        };
        let mut text = counter(
            "agentrack_token_store_lookups_total",
            "Store queries for a token not in this node's cache.",
            self.stats.store_lookups.load(Ordering::Relaxed),
        );
        text += &counter(
            "agentrack_token_refused_cached_total",
            "Tokens refused from the cache of refused tokens, without a store query.",
            self.stats.refused_from_cache.load(Ordering::Relaxed),
        );
        text += &counter(
            "agentrack_token_refused_malformed_total",
            "Tokens refused for their shape, without a store query.",
            self.stats.refused_malformed.load(Ordering::Relaxed),
        );
        let _ = write!(
            text,
            "# HELP agentrack_token_refused_cache_entries Refused tokens remembered now.\n# TYPE agentrack_token_refused_cache_entries gauge\nagentrack_token_refused_cache_entries{labels} {}\n",
            self.refused_len()
        );
        text
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
    /// For a stream opened with a ticket, the hash of the token it was made for (what the
    /// per-token stream quota counts).
    ticket_for: Option<Arc<str>>,
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

/// The query parameters the guard reads; the handler reads (and checks) the others.
#[derive(Debug, Deserialize)]
struct CredentialParameters {
    ticket: Option<String>,
    token: Option<String>,
}

/// Whether a request comes with a well-formed `?ticket=` and no `Authorization` header: what the
/// access guard checks a stream request's parameters for before the ticket is used up.
pub fn presents_ticket(headers: &HeaderMap, uri: &Uri) -> bool {
    bearer(headers).is_none() && query_ticket_of(uri).is_ok_and(|ticket| well_formed(&ticket, TICKET_PREFIX))
}

/// The `?ticket=` of a stream's URL.
fn query_ticket_of(uri: &Uri) -> Result<String, ApiError> {
    let Query(CredentialParameters { ticket, token }) = Query::try_from_uri(uri)
        .map_err(|rejection| ApiError::unauthorized(format!("the query cannot be read: {}", rejection.body_text())))?;
    match (ticket.filter(|ticket| !ticket.is_empty()), token) {
        (Some(ticket), _) => Ok(ticket),
        // Tokens in URLs end up in proxies' access logs: a ticket is single-use and short-lived.
        (None, Some(_)) => Err(ApiError::unauthorized(
            "?token= is not accepted (URLs end up in logs): send `Authorization: Bearer <token>`, or get a \
             single-use ticket from POST /v1/events/ticket and pass ?ticket=",
        )),
        (None, None) => Err(ApiError::unauthorized(
            "a bearer token or ?ticket= (from POST /v1/events/ticket) is required",
        )),
    }
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
    /// `query_ticket` (the event stream, which browsers open without headers) the token of the
    /// single-use `?ticket=`.
    ///
    /// # Errors
    ///
    /// 401 for a missing, malformed, unknown, revoked or expired token or ticket; 503 when the
    /// store cannot be read.
    pub async fn authenticate(
        state: &AppState,
        headers: &HeaderMap,
        uri: &Uri,
        query_ticket: bool,
    ) -> Result<Self, ApiError> {
        let token = match bearer(headers) {
            Some(token) => token?,
            None if query_ticket => return Self::redeem(state, &query_ticket_of(uri)?).await,
            None => return Err(ApiError::unauthorized("a bearer token is required")),
        };
        let grant = state.tokens.resolve(state.store.as_ref(), &token).await?;
        Ok(Self {
            grant,
            token: Some(token.into()),
            ticket_for: None,
        })
    }

    /// The scope of the token a ticket was made for, using the ticket up.
    async fn redeem(state: &AppState, ticket: &str) -> Result<Self, ApiError> {
        if !well_formed(ticket, TICKET_PREFIX) {
            return Err(ApiError::unauthorized(
                "malformed ticket: expected tkt_ and 64 hex digits",
            ));
        }
        let taken = state
            .pipeline
            .take_ticket(hash_token(ticket))
            .await
            .map_err(ApiError::store)?;
        let Some((token_hash, expires_at)) = taken else {
            return Err(ApiError::unauthorized("unknown or already used ticket"));
        };
        if expires_at <= Utc::now() {
            return Err(ApiError::unauthorized(
                "the ticket has expired: get a new one from POST /v1/events/ticket",
            ));
        }
        let grant = state
            .tokens
            .resolve_hash(state.store.as_ref(), token_hash.clone())
            .await?;
        Ok(Self {
            grant,
            token: None,
            ticket_for: Some(token_hash.into()),
        })
    }

    /// A scope for a grant (for tests and in-process callers).
    pub fn new(grant: TokenGrant) -> Self {
        Self {
            grant: Arc::new(grant),
            token: None,
            ticket_for: None,
        }
    }

    /// The token the caller presented, if it came over the network.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The hash of the caller's token: of the one presented, or of the one its ticket was made
    /// for; `None` for in-process callers.
    pub fn token_hash(&self) -> Option<String> {
        self.token
            .as_deref()
            .map(hash_token)
            .or_else(|| self.ticket_for.as_deref().map(str::to_owned))
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
            Role::Metrics => false,
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
            // A metrics token reads no route that subscribes; were it to, it would see nothing.
            Role::Viewer | Role::Metrics => (Some(self.grant.tenant.clone()), self.grant.user_id.clone()),
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
            Role::Viewer | Role::Metrics => (Some(&self.grant.tenant), self.grant.user_id.as_deref()),
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
            Role::Metrics => None,
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
    fn only_the_shapes_of_tokens_and_tickets_reach_the_store() {
        let token = generate_token().unwrap();
        let ticket = generate_ticket().unwrap();
        assert!(well_formed(&token, TOKEN_PREFIX) && well_formed(&ticket, TICKET_PREFIX));
        assert!(!well_formed(&ticket, TOKEN_PREFIX) && !well_formed(&token, TICKET_PREFIX));
        for bad in [
            "agt_",
            "agt_unknown",
            &token.to_uppercase(),
            &format!("{token}0"),
            &token[1..],
        ] {
            assert!(!well_formed(bad, TOKEN_PREFIX), "{bad}");
        }
        let id = token_id(&hash_token(&token));
        assert!(id.starts_with("tok_") && id.len() == 20, "{id}");
        assert!(!token.contains(&id[4..]), "the id is not part of the token");
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
