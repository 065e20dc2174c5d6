//! `/v1/tokens`: admins make tokens.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use serde_json::{Value, json};

use super::body::{Fields, JsonBody};
use super::error::ApiError;
use super::{Access, Route, RouteDoc};
use crate::app::AppState;
use crate::auth::{Role, TokenGrant, generate_token, hash_token};
use crate::names::NameKind;

/// The routes of this resource.
pub fn routes() -> Vec<Route> {
    vec![Route {
        doc: RouteDoc {
            method: "POST",
            path: "/v1/tokens",
            operation_id: "createToken",
            summary: "Make a token (admin only). The token is shown once; only its hash is stored.",
            durable: true,
            access: Access::Admin("create tokens"),
            request: Some("NewToken"),
            success: (201, Some("TokenCreated")),
            errors: &[400, 401, 403, 413, 422, 503],
            query: &[],
        },
        handler: post(create),
    }]
}

async fn create(State(state): State<AppState>, body: JsonBody) -> Result<(StatusCode, Json<Value>), ApiError> {
    let fields = Fields::new(body, &["role", "tenant", "user_id", "label"])?;
    let role: Role = fields.enumeration("role", "invalid_role", "role")?;
    let tenant = fields.name("tenant", NameKind::Tenant)?;
    let user_id = fields.optional_name("user_id", NameKind::User)?;
    let label = fields.optional_string("label")?;
    let grant = TokenGrant::new(role, tenant, user_id, label)
        .map_err(|error| ApiError::invalid_field("user_id", error.to_string()))?;
    let token = generate_token().map_err(|error| ApiError::internal(format!("no randomness: {error}")))?;
    let hash = hash_token(&token);
    state
        .pipeline
        .insert_token(hash.clone(), grant.clone())
        .await
        .map_err(ApiError::store)?;
    state.tokens.insert(hash, grant.clone());
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "role": grant.role,
            "tenant": grant.tenant,
            "user_id": grant.user_id,
            "label": grant.label,
        })),
    ))
}
