//! The audit log: every state-changing admin call (any method but GET/HEAD/OPTIONS) is written to the store after it
//! ran — who ([`Actor`]), what (method and route), on what (the route's `{id}`), when, and the status it ended with —
//! by [`record`], a layer over every admin route, so no route can forget it. `GET /admin/audit` shows it.
//!
//! Handlers may add a line of detail with an [`AuditDetail`] response extension; it must never hold a secret.

use axum::extract::{FromRequestParts, MatchedPath, Query, RawPathParams, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use crate::auth::Actor;
use crate::error::GatewayError;
use crate::state::AppState;
use crate::store::ops::AuditEntry;

/// A line of detail for the audit entry of the response it is attached to (names and ids, never secrets).
#[derive(Debug, Clone)]
pub struct AuditDetail(pub String);

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/audit", get(list))
}

/// Writes an entry; a store failure is logged, not returned (the action itself already happened).
pub async fn write(state: &AppState, entry: AuditEntry) {
    let Some(ops) = state.store.ops() else {
        return;
    };
    if let Err(e) = ops.append_audit(entry).await {
        tracing::warn!(error = %e, "could not write the audit log entry of an admin action");
    }
}

pub async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method().is_safe() {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let route = parts
        .extensions
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let action = format!("{} {route}", parts.method);
    let target = RawPathParams::from_request_parts(&mut parts, &state)
        .await
        .ok()
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| *k == "id")
                .map(|(_, v)| v.to_string())
        });
    let actor = parts
        .extensions
        .get::<Actor>()
        .map(|a| a.label().to_string())
        .unwrap_or_else(|| "unknown".into());
    let response = next.run(Request::from_parts(parts, body)).await;
    let entry = AuditEntry {
        id: 0,
        at: state.clock.now(),
        actor,
        action,
        target,
        status: response.status().as_u16(),
        detail: response
            .extensions()
            .get::<AuditDetail>()
            .map(|d| d.0.clone()),
    };
    write(&state, entry).await;
    response
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    limit: Option<u32>,
    before: Option<i64>,
}

async fn list(
    State(state): State<AppState>,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let Query(p) = params.map_err(|e| GatewayError::InvalidRequest(e.body_text()))?;
        let ops = super::ops(&state)?;
        let entries = ops
            .list_audit(p.limit.unwrap_or(100).clamp(1, 1000), p.before)
            .await
            .map_err(|e| GatewayError::from_store(&e))?;
        Ok::<_, GatewayError>(Json(serde_json::json!({ "entries": entries })).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
