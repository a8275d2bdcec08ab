//! The admin API (`Authorization: Bearer <admin_key>` or a dashboard session): account states, cooldown reset,
//! refresh now; account actions ([`accounts`]), OAuth logins ([`oauth`]), sessions ([`session`]), the audit log
//! ([`audit`], written for every state-changing call), the cluster and the redacted config ([`cluster`]), the overview
//! ([`overview`]), the OpenAPI document ([`openapi`]); client keys ([`keys`]); usage and the request log ([`usage`]).
//!
//! `GET /admin/accounts` answers `{"accounts":[{"id","name","kind","state","expires_at","cooldown_until","last_error",…}]}`;
//! that shape is a contract, fields may be added. Beside it, `token_endpoint`: the token-endpoint budget, its pause
//! (until when, why) and the refresh queue; `GET /admin/refresh` shows that view with the accounts refreshing now.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::account::AccountId;
use crate::error::GatewayError;
use crate::pool::AccountEntry;
use crate::state::AppState;
use crate::view::AccountView;

pub mod accounts;
pub mod audit;
pub mod cluster;
pub mod keys;
pub mod oauth;
pub mod openapi;
pub mod overview;
pub mod session;
pub mod usage;

/// The admin routes behind authentication (the server adds it, and [`audit::record`] inside it).
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(accounts::routes())
        .merge(audit::routes())
        .merge(cluster::routes())
        .merge(oauth::routes())
        .merge(openapi::routes())
        .merge(overview::routes())
        .merge(session::routes())
        .merge(keys::routes())
        .merge(usage::routes())
        .route("/admin/accounts", get(list))
        .route("/admin/refresh", get(refresh_view))
        .route("/admin/accounts/{id}/reset", post(reset))
        .route("/admin/accounts/{id}/refresh", post(refresh))
}

async fn list(State(state): State<AppState>) -> Response {
    if let Err(e) = state.pool().sync().await {
        tracing::warn!(error = %e, "admin: store sync failed; showing the last known accounts");
    }
    let usage: std::collections::HashMap<AccountId, crate::store::Usage> = state
        .store
        .usage_totals()
        .await
        .map(|u| u.into_iter().collect())
        .unwrap_or_default();
    let accounts: Vec<AccountView> = state
        .pool()
        .entries()
        .iter()
        .map(|e| {
            let mut v = AccountView::live(e, state.clock.as_ref());
            v.usage = usage.get(&e.id).cloned();
            v
        })
        .collect();
    let token_endpoint = state.pool().engine().budget_view().await;
    // Serialized straight from the views: through a `serde_json::Value` tree, 10,000 accounts took about 40 MB for a
    // 4 MB answer, and the allocator kept most of it.
    #[derive(serde::Serialize)]
    struct Listing<T> {
        accounts: Vec<AccountView>,
        token_endpoint: T,
    }
    Json(Listing {
        accounts,
        token_endpoint,
    })
    .into_response()
}

/// The token endpoint's budget, pause and refresh queue, and the accounts whose refresh runs now.
async fn refresh_view(State(state): State<AppState>) -> Response {
    let token_endpoint = state.pool().engine().budget_view().await;
    let refreshing: Vec<serde_json::Value> = state
        .pool()
        .entries()
        .iter()
        .filter(|e| e.cell.refreshing())
        .map(|e| serde_json::json!({ "id": e.id, "name": e.cell.account().name }))
        .collect();
    Json(serde_json::json!({ "token_endpoint": token_endpoint, "refreshing": refreshing }))
        .into_response()
}

fn entry(state: &AppState, id: &str) -> Result<std::sync::Arc<AccountEntry>, GatewayError> {
    id.parse::<AccountId>()
        .ok()
        .and_then(|id| state.pool().get(id))
        .ok_or_else(|| GatewayError::NotFound(format!("no account {id}")))
}

async fn reset(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match entry(&state, &id) {
        Ok(e) => {
            if let Err(err) = state.pool().reset(&e).await {
                tracing::warn!(error = %err, "cooldowns cleared here but not in the store");
            }
            Json(AccountView::live(&e, state.clock.as_ref())).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Starts a refresh now. Subject to the same single-flight and backoff rules as every other path.
async fn refresh(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let e = match entry(&state, &id) {
        Ok(e) => e,
        Err(e) => return e.into_response(),
    };
    if let Some(ban) = &e.cell.account().banned {
        return GatewayError::InvalidRequest(format!(
            "this account is banned by Anthropic ({ban}); `claude-gateway accounts enable` clears that"
        ))
        .into_response();
    }
    if !e.cell.account().refreshable() {
        return GatewayError::InvalidRequest("this account has no refresh token".into())
            .into_response();
    }
    match state.pool().engine().refresh_now(&e.cell) {
        Ok(()) => (
            axum::http::StatusCode::ACCEPTED,
            Json(AccountView::live(&e, state.clock.as_ref())),
        )
            .into_response(),
        Err(err) => err.to_gateway_error().into_response(),
    }
}

/// The store's operator tables, or why there are none.
pub(crate) fn ops(state: &AppState) -> Result<&dyn crate::store::ops::OpsStore, GatewayError> {
    state.store.ops().ok_or_else(|| GatewayError::Unavailable {
        message: "this store keeps no audit log".into(),
        retry_after_secs: None,
    })
}
