//! Client and admin authentication middleware. Errors answer in the dialect of the route called.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{Dialect, GatewayError};
use crate::state::AppState;

/// Compares secrets in time independent of where they differ.
fn secret_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
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

pub async fn client_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let keys = &state.config.client_keys;
    if !keys.is_empty() {
        let dialect = Dialect::of_request(req.uri().path(), req.headers());
        match presented_key(req.headers()) {
            None => {
                return GatewayError::Unauthorized(
                    "missing client key: send it as x-api-key or Authorization: Bearer".into(),
                )
                .into_dialect_response(dialect)
            }
            Some(k) if !keys.iter().any(|c| secret_eq(c, k)) => {
                return GatewayError::Unauthorized("invalid client key".into())
                    .into_dialect_response(dialect)
            }
            Some(_) => {}
        }
    }
    next.run(req).await
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
