//! The admin API (`Authorization: Bearer <admin_key>`): account states, cooldown reset, refresh now.
//!
//! `GET /admin/accounts` answers `{"accounts":[{"id","name","kind","state","expires_at","cooldown_until","last_error",…}]}`;
//! that shape is a contract, fields may be added.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

use crate::account::AccountId;
use crate::clock::{instant_to_wall, rfc3339};
use crate::error::GatewayError;
use crate::pool::AccountEntry;
use crate::refresh::CredentialState;
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/accounts", get(list))
        .route("/admin/accounts/{id}/reset", post(reset))
        .route("/admin/accounts/{id}/refresh", post(refresh))
}

#[derive(Debug, Serialize)]
pub struct AccountView {
    pub id: AccountId,
    pub name: String,
    pub kind: &'static str,
    /// `ready`, `cooling_down`, `refresh_backoff`, `needs_reauth` or `disabled`.
    pub state: &'static str,
    pub expires_at: Option<String>,
    pub cooldown_until: Option<String>,
    pub refresh_retry_at: Option<String>,
    pub last_error: Option<String>,
    pub email: Option<String>,
    pub organization: Option<String>,
    pub priority: i32,
    pub weight: u32,
    pub in_flight: usize,
    pub requests: u64,
    pub refreshing: bool,
    /// Highest utilization of the account-wide windows last reported (0..1).
    pub utilization: Option<f64>,
    /// Every rate-limit window the last answer reported.
    pub windows: Vec<WindowView>,
    /// Models this account is cooling for, with when each ends.
    pub model_cooldowns: Vec<ModelCooldownView>,
    /// Usage totals from the store (all replicas), as of their last batch.
    pub usage: Option<crate::store::Usage>,
}

#[derive(Debug, Serialize)]
pub struct WindowView {
    pub name: String,
    pub status: Option<String>,
    pub utilization: Option<f64>,
    pub reset: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ModelCooldownView {
    pub model: String,
    pub until: String,
}

pub fn view(state: &AppState, entry: &AccountEntry) -> AccountView {
    let clock = state.clock.as_ref();
    let account = entry.cell.account();
    let (cred_state, retry_at, cred_error) = entry.cell.state();
    let cooling = entry.cooling_until(None);
    let state_name = if account.disabled {
        "disabled"
    } else {
        match cred_state {
            CredentialState::NeedsReauth => "needs_reauth",
            CredentialState::RefreshBackoff | CredentialState::Held => "refresh_backoff",
            CredentialState::Ready if cooling.is_some() => "cooling_down",
            CredentialState::Ready => "ready",
        }
    };
    AccountView {
        id: account.id,
        name: account.name.clone(),
        kind: account.kind.as_str(),
        state: state_name,
        expires_at: account.credential.expires_at.map(rfc3339),
        cooldown_until: cooling.map(|t| rfc3339(instant_to_wall(clock, t))),
        refresh_retry_at: retry_at.map(|t| rfc3339(instant_to_wall(clock, t))),
        last_error: cred_error
            .or_else(|| entry.cooldown_reason())
            .or_else(|| account.last_error.clone()),
        email: account.email.clone(),
        organization: account.organization_name.clone(),
        priority: account.priority,
        weight: account.weight,
        in_flight: entry.in_flight(),
        requests: entry.served(),
        refreshing: entry.cell.refreshing(),
        utilization: entry.utilization(),
        windows: entry
            .limits()
            .map(|l| {
                l.windows
                    .into_iter()
                    .map(|w| WindowView {
                        name: w.name,
                        status: w.status,
                        utilization: w.utilization,
                        reset: w.reset.map(rfc3339),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        model_cooldowns: entry
            .model_cooldowns()
            .into_iter()
            .map(|(model, t)| ModelCooldownView {
                model,
                until: rfc3339(instant_to_wall(clock, t)),
            })
            .collect(),
        usage: None,
    }
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
            let mut v = view(&state, e);
            v.usage = usage.get(&e.id).cloned();
            v
        })
        .collect();
    Json(serde_json::json!({ "accounts": accounts })).into_response()
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
            Json(view(&state, &e)).into_response()
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
    if !e.cell.account().refreshable() {
        return GatewayError::InvalidRequest("this account has no refresh token".into())
            .into_response();
    }
    match state.pool().engine().refresh_now(&e.cell) {
        Ok(()) => (axum::http::StatusCode::ACCEPTED, Json(view(&state, &e))).into_response(),
        Err(err) => GatewayError::from_refresh(&err).into_response(),
    }
}
