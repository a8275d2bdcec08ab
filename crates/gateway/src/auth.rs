//! Client and admin authentication middleware. Errors answer in the dialect of the route called.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{Dialect, GatewayError};
use crate::state::AppState;

use crate::keys::ring::secret_eq;

pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// Resolves the presented key to a [`crate::keys::Tenant`] (static config key, managed key, or an open gateway) and
/// attaches it to the request's extensions; refuses missing, unknown, disabled and expired keys in the route's dialect.
pub async fn client_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let now = state.clock.now();
    match state.keys().authenticate(presented_key(req.headers()), now) {
        Ok(tenant) => {
            req.extensions_mut().insert(tenant);
            next.run(req).await
        }
        Err(e) => e.into_dialect_response(Dialect::of_request(req.uri().path(), req.headers())),
    }
}

pub async fn admin_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ok = match (&state.config.admin_key, presented_key(req.headers())) {
        (Some(admin), Some(k)) => secret_eq(admin, k),
        _ => false,
    };
    if !ok {
        return GatewayError::Unauthorized(
            "admin API needs Authorization: Bearer <admin_key> (set admin_key in the config)"
                .into(),
        )
        .into_response();
    }
    next.run(req).await
}
