//! `/v1/tokens`: admins make, list and revoke tokens.
//!
//! A revocation is effective on the next request on every node: the revoking node forgets the
//! token, then asks every other alive node to forget it (and waits for them, as cluster-wide
//! reads do); the store also notifies every node when the revocation commits, which reaches a
//! node the first call missed. The last admin token that is neither revoked nor expired cannot
//! be revoked (409 `last_admin_token`): nobody could make tokens over the API any more.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::{delete, get, post};
use chrono::Utc;
use serde_json::{Value, json};

use super::body::{Fields, JsonBody};
use super::error::ApiError;
use super::{Access, Route, RouteDoc};
use crate::app::AppState;
use crate::auth::{Role, Scope, TokenGrant, generate_token, hash_token, token_id};
use crate::cluster::gather;
use crate::names::NameKind;
use crate::store::Revoked;

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            doc: RouteDoc {
                method: "POST",
                path: "/v1/tokens",
                operation_id: "createToken",
                summary: "Make a token (admin only), optionally expiring. The token is shown once; only its hash is stored.",
                durable: true,
                access: Access::Admin("create tokens"),
                request: Some("NewToken"),
                success: (201, Some("TokenCreated")),
                errors: &[400, 401, 403, 413, 422, 503],
                query: &[],
            },
            handler: post(create),
        },
        Route {
            doc: RouteDoc {
                method: "GET",
                path: "/v1/tokens",
                operation_id: "listTokens",
                summary: "Every token, revoked and expired ones included (admin only): ids and grants, never the tokens.",
                durable: false,
                access: Access::Admin("list tokens"),
                request: None,
                success: (200, Some("TokenList")),
                errors: &[401, 403, 503],
                query: &[],
            },
            handler: get(list),
        },
        Route {
            doc: RouteDoc {
                method: "DELETE",
                path: "/v1/tokens/{token_id}",
                operation_id: "revokeToken",
                summary: "Revoke a token (admin only): refused from the next request on, on every node. The last valid admin token cannot be revoked (409).",
                durable: true,
                access: Access::Admin("revoke tokens"),
                request: None,
                success: (200, Some("TokenInfo")),
                errors: &[401, 403, 404, 409, 503],
                query: &[],
            },
            handler: delete(revoke),
        },
    ]
}

/// `POST /v1/tokens`' body: the grant asked for.
pub(crate) fn new_token(body: JsonBody) -> Result<TokenGrant, ApiError> {
    let fields = Fields::new(body, &["role", "tenant", "user_id", "label", "expires_in_seconds"])?;
    let role: Role = fields.enumeration("role", "invalid_role", "role")?;
    let tenant = fields.name("tenant", NameKind::Tenant)?;
    let user_id = fields.optional_name("user_id", NameKind::User)?;
    let label = fields.optional_string("label")?;
    let expires_in = fields.optional_seconds("expires_in_seconds")?;
    let mut grant = TokenGrant::new(role, tenant, user_id, label)
        .map_err(|error| ApiError::invalid_field("user_id", error.to_string()))?;
    grant.expires_at = expires_in
        .and_then(|expires_in| chrono::Duration::from_std(expires_in).ok())
        .map(|expires_in| grant.created_at + expires_in);
    Ok(grant)
}

async fn create(State(state): State<AppState>, body: JsonBody) -> Result<(StatusCode, Json<Value>), ApiError> {
    let grant = new_token(body)?;
    let token = generate_token().map_err(|error| ApiError::internal(format!("no randomness: {error}")))?;
    let hash = hash_token(&token);
    state
        .pipeline
        .insert_token(hash.clone(), grant.clone())
        .await
        .map_err(ApiError::store)?;
    state.tokens.insert(hash.clone(), grant.clone());
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "id": token_id(&hash),
            "role": grant.role,
            "tenant": grant.tenant,
            "user_id": grant.user_id,
            "label": grant.label,
            "expires_at": grant.expires_at,
        })),
    ))
}

async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    let tokens = state.store.tokens().await.map_err(ApiError::store)?;
    Ok(Json(json!({
        "tokens": tokens.iter().map(|info| info.to_json(now)).collect::<Vec<_>>(),
    })))
}

async fn revoke(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let now = Utc::now();
    if gather::is_part_request(&headers) {
        // Another node revoked it and asks this one to forget it; the store says how it stands.
        state.tokens.forget_id(&id);
        let tokens = state.store.tokens().await.map_err(ApiError::store)?;
        let info = tokens
            .into_iter()
            .find(|info| info.id == id)
            .ok_or_else(|| ApiError::not_found_thing("token", &id))?;
        return Ok(Json(info.to_json(now)));
    }
    match state
        .pipeline
        .revoke_token(id.clone(), now)
        .await
        .map_err(ApiError::store)?
    {
        Revoked::Unknown => Err(ApiError::not_found_thing("token", &id)),
        Revoked::LastAdmin => Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_admin_token",
            format!(
                "token {id} is the last admin token that is neither revoked nor expired: make another admin token \
                 first (nobody could make tokens over the API otherwise)"
            ),
        )),
        Revoked::Done { info, hash } => {
            state.tokens.forget(&hash);
            if let Some(gathered) =
                gather::ask_peers(&state, &scope, &headers, Method::DELETE, &format!("/v1/tokens/{id}")).await
                && !gathered.missing.is_empty()
            {
                // They hear of it from the store's notification, or forget every token when
                // their listening connection comes back.
                tracing::warn!(token = %id, missing = ?gathered.missing, "nodes did not confirm a revocation");
            }
            Ok(Json(info.to_json(now)))
        }
    }
}
