//! Who may call a route, enforced where the route is mounted.
//!
//! Every route's [`RouteDoc`](super::RouteDoc) names its [`Access`] level, and
//! [`router`](super::router) wraps every route in [`guard`] for that level. So the level the
//! OpenAPI document shows is the one enforced, a handler never checks a role itself, and a new
//! route cannot be mounted without one. The guard resolves the caller's token once and hands the
//! [`Scope`] to the handler through the request's extensions (see [`Scope`]'s extractor).
//!
//! Refusals are those the API has always given: 401 `unauthorized` for a missing or unknown
//! token, 403 `forbidden` naming the caller's role and what it may not do.

use axum::extract::Request;
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::app::AppState;
use crate::auth::{Role, Scope, presents_ticket};

/// Who may call a route. `Write` and `Admin` carry what the route does, as a refused caller is
/// told: "a viewer token may not *create executions*".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token needed.
    Public,
    /// Any valid token but a `metrics` one (results are limited to the caller's scope).
    Read,
    /// Admin or agent tokens.
    Write(&'static str),
    /// Admin tokens only.
    Admin(&'static str),
    /// Admin or `metrics` tokens; public when the server's `metrics_require_auth` is off.
    Metrics(&'static str),
}

impl Access {
    /// The level in force on a server with these settings.
    fn in_force(self, state: &AppState) -> Self {
        match self {
            Self::Metrics(_) if !state.settings.metrics_require_auth => Self::Public,
            other => other,
        }
    }

    /// Whether a token of `role` meets this level.
    pub fn admits(self, role: Role) -> bool {
        match self {
            Self::Public => true,
            Self::Read => role != Role::Metrics,
            Self::Write(_) => matches!(role, Role::Admin | Role::Agent),
            Self::Admin(_) => role == Role::Admin,
            Self::Metrics(_) => matches!(role, Role::Admin | Role::Metrics),
        }
    }

    /// `Ok` when `scope`'s role meets this level; else the 403 naming its role.
    ///
    /// # Errors
    ///
    /// 403 `forbidden`.
    pub fn check(self, scope: &Scope) -> Result<(), ApiError> {
        if self.admits(scope.role()) {
            return Ok(());
        }
        let action = match self {
            Self::Write(action) | Self::Admin(action) | Self::Metrics(action) => action,
            Self::Read => "read executions, events or metrics of a tenant",
            Self::Public => "call this route",
        };
        Err(ApiError::forbidden(format!(
            "a {} token may not {action}",
            scope.role()
        )))
    }

    /// How the OpenAPI document names the level (`x-access`).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Read => "any token",
            Self::Write(_) => "admin or agent",
            Self::Admin(_) => "admin",
            Self::Metrics(_) => "admin or metrics (public when the server sets metrics_require_auth = false)",
        }
    }
}

/// A route's check of a request's parameters, run before a `?ticket=` is used up.
pub type TicketCheck = fn(&AppState, &Uri) -> Result<(), ApiError>;

/// How a route takes its token.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// The route's level.
    pub access: Access,
    /// Whether a single-use `?ticket=` is accepted when there is no `Authorization` header
    /// (browsers cannot set headers on a WebSocket): the routes whose documented query
    /// parameters include `ticket`.
    pub query_ticket: bool,
    /// What a request that came with a `?ticket=` (and no `Authorization`) is checked for
    /// before its ticket is used up: a refusal then costs the caller no ticket.
    pub ticket_check: Option<TicketCheck>,
    /// Whether the route is refused while the store is failing (see [`RouteDoc::durable`](super::RouteDoc)).
    pub durable: bool,
    /// Whether the route changes anything (every method but `GET`): refused while the store's
    /// queue is full (`max_store_queue`), heartbeats included.
    pub writes: bool,
}

/// The middleware every route runs behind: resolves the token, refuses a caller below the
/// route's level, and passes the [`Scope`] on to the handler.
pub async fn guard(guard: Guard, state: AppState, mut request: Request, next: Next) -> Response {
    let access = guard.access.in_force(&state);
    if access == Access::Public {
        return next.run(request).await;
    }
    // Only for a ticket that could be real: a request with no credentials to speak of is
    // refused as unauthenticated whatever its parameters.
    if let Some(check) = guard.ticket_check
        && presents_ticket(request.headers(), request.uri())
        && let Err(error) = check(&state, request.uri())
    {
        return error.into_response();
    }
    let scope = match Scope::authenticate(&state, request.headers(), request.uri(), guard.query_ticket).await {
        Ok(scope) => scope,
        Err(error) => return error.into_response(),
    };
    if let Err(error) = access.check(&scope) {
        return error.into_response();
    }
    if guard.durable && !state.pipeline.is_healthy() {
        return ApiError::store_failing().into_response();
    }
    if guard.writes && !state.pipeline.has_room() {
        return ApiError::store_backlog(state.pipeline.max_queued()).into_response();
    }
    request.extensions_mut().insert(scope);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_level_admits_the_roles_it_documents() {
        let all = [Role::Admin, Role::Agent, Role::Viewer, Role::Metrics];
        let admitted = |access: Access| -> Vec<Role> { all.into_iter().filter(|r| access.admits(*r)).collect() };
        assert_eq!(admitted(Access::Public), all);
        assert_eq!(admitted(Access::Read), [Role::Admin, Role::Agent, Role::Viewer]);
        assert_eq!(admitted(Access::Write("x")), [Role::Admin, Role::Agent]);
        assert_eq!(admitted(Access::Admin("x")), [Role::Admin]);
        assert_eq!(admitted(Access::Metrics("x")), [Role::Admin, Role::Metrics]);
    }
}
