//! Token administration routes (admin scope): `POST /v1/tokens` makes a scoped token and
//! shows its secret once, `GET /v1/tokens` lists names, scopes and creation times,
//! `DELETE /v1/tokens/{name}` revokes one on every node. The work is messages to the
//! [`TokenActor`], which stores only hashes and replicates the records.

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use blocknode_actors::tokens::{
    CreateToken, ListTokens, RevokeToken, Scope, TokenActor, TokenError, TokenInfo, TokenName,
};

use super::{actor_err, ApiError, ApiResult};

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        let (status, code) = match &e {
            TokenError::Exists { .. } => (StatusCode::CONFLICT, "token_exists"),
            TokenError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn parse_name(s: &str) -> Result<TokenName, ApiError> {
    s.parse()
        .map_err(|e| ApiError::bad_request(format!("invalid token name: {e}")))
}

/// Body of `POST /v1/tokens`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    /// 1–64 characters of `A-Z a-z 0-9 . _ -`, unique among live tokens.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    name: String,
    /// `read`, `write` or `admin`.
    #[schema(pattern = "^(read|write|admin)$")]
    scope: String,
}

/// One token as listed (never its secret).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenView {
    name: String,
    /// `read`, `write` or `admin`.
    scope: String,
    /// Creation time, ms since the Unix epoch.
    created_ms: u64,
}

impl From<&TokenInfo> for TokenView {
    fn from(t: &TokenInfo) -> Self {
        TokenView {
            name: t.name.to_string(),
            scope: t.scope.to_string(),
            created_ms: t.created_ms,
        }
    }
}

/// Reply to `POST /v1/tokens`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedView {
    /// The secret to send as `Authorization: Bearer <token>`: shown only in this reply.
    token: String,
    name: String,
    scope: String,
    created_ms: u64,
    /// Other members the token was pushed to, and how many confirmed (the others get it
    /// at their next pull, within seconds of being up).
    peers: usize,
    peers_confirmed: usize,
}

/// Reply to `GET /v1/tokens`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct TokenList {
    tokens: Vec<TokenView>,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = CreateBody, responses((status = 201, description = "the new token; its secret is shown only here", body = CreatedView), (status = 400, description = "malformed name, scope or body", body = crate::http::schema::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 403, description = "the token's scope is not admin", body = crate::http::schema::ErrorBody), (status = 409, description = "a live token has this name (code token_exists)", body = crate::http::schema::ErrorBody), (status = 503, description = "an actor unavailable", body = crate::http::schema::ErrorBody)))]
pub(super) async fn create_token(
    tokens: web::Data<Addr<TokenActor>>,
    body: web::Json<CreateBody>,
) -> ApiResult {
    let name = parse_name(&body.name)?;
    let scope: Scope = body
        .scope
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{e}")))?;
    let t = tokens
        .send(CreateToken { name, scope })
        .await
        .map_err(|e| actor_err("token", e))??;
    Ok(HttpResponse::Created().json(CreatedView {
        token: t.secret,
        name: t.info.name.to_string(),
        scope: t.info.scope.to_string(),
        created_ms: t.info.created_ms,
        peers: t.push.peers,
        peers_confirmed: t.push.confirmed,
    }))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", responses((status = 200, description = "the live tokens: names, scopes, creation times", body = TokenList), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 403, description = "the token's scope is not admin", body = crate::http::schema::ErrorBody), (status = 503, description = "an actor unavailable", body = crate::http::schema::ErrorBody)))]
pub(super) async fn list_tokens(tokens: web::Data<Addr<TokenActor>>) -> ApiResult {
    let list = tokens
        .send(ListTokens)
        .await
        .map_err(|e| actor_err("token", e))?;
    Ok(HttpResponse::Ok().json(TokenList {
        tokens: list.iter().map(TokenView::from).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/tokens/{name}", tag = "tokens", params(("name" = String, Path, description = "the token's name: 1-64 of A-Z a-z 0-9 . _ -", pattern = "^[A-Za-z0-9._-]{1,64}$")), responses((status = 204, description = "revoked here at once and pushed to every node (idempotent)"), (status = 400, description = "malformed name", body = crate::http::schema::ErrorBody), (status = 401, description = "missing or invalid token", body = crate::http::schema::ErrorBody), (status = 403, description = "the token's scope is not admin", body = crate::http::schema::ErrorBody), (status = 404, description = "no token ever had this name", body = crate::http::schema::ErrorBody), (status = 503, description = "an actor unavailable", body = crate::http::schema::ErrorBody)))]
pub(super) async fn revoke_token(
    tokens: web::Data<Addr<TokenActor>>,
    path: web::Path<String>,
) -> ApiResult {
    let name = parse_name(&path)?;
    tokens
        .send(RevokeToken { name })
        .await
        .map_err(|e| actor_err("token", e))??;
    Ok(HttpResponse::NoContent().finish())
}
