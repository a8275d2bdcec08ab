//! Account actions of the admin API: detail, add an API key, import credential files (the formats of
//! `accounts import`, in the request body), change scheduling fields and tags, enable, disable, remove.
//!
//! Every write goes to the store first (compare-and-set, retried on a concurrent change) and the pool is synced before
//! the answer, so the answer shows the account as this replica now serves it.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::audit::AuditDetail;
use crate::account::{Account, AccountId, NewAccount};
use crate::error::GatewayError;
use crate::state::AppState;
use crate::store::{AccountUpdate, Patch, StoreError};
use crate::view::AccountView;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/accounts", post(add_key))
        .route("/admin/accounts/import", post(import))
        .route(
            "/admin/accounts/{id}",
            get(detail).patch(change).delete(remove),
        )
        .route("/admin/accounts/{id}/enable", post(enable))
        .route("/admin/accounts/{id}/disable", post(disable))
}

/// A JSON body, or a 400 naming what is wrong with it.
pub(super) fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidRequest(format!("request body: {e}")))
}

fn store_err(e: StoreError) -> GatewayError {
    GatewayError::from_store(&e)
}

/// The account as this replica serves it (after a sync), or as stored when the pool does not hold it.
pub(super) async fn view_of(state: &AppState, account: &Account) -> AccountView {
    if let Err(e) = state.pool().sync().await {
        tracing::warn!(error = %e, "admin: store sync failed after a change");
    }
    let mut view = match state.pool().get(account.id) {
        Some(e) => AccountView::live(&e, state.clock.as_ref()),
        None => AccountView::stored(account),
    };
    if let Ok(usage) = state.store.usage_totals().await {
        view.usage = usage
            .into_iter()
            .find(|(id, _)| *id == account.id)
            .map(|(_, u)| u);
    }
    view
}

fn with_detail(response: impl IntoResponse, detail: String) -> Response {
    let mut r = response.into_response();
    r.extensions_mut().insert(AuditDetail(detail));
    r
}

fn account_id(id: &str) -> Result<AccountId, GatewayError> {
    id.parse()
        .map_err(|_| GatewayError::NotFound(format!("no account {id}")))
}

async fn stored(state: &AppState, id: &str) -> Result<Account, GatewayError> {
    state
        .store
        .get_account(account_id(id)?)
        .await
        .map_err(store_err)?
        .ok_or_else(|| GatewayError::NotFound(format!("no account {id}")))
}

async fn detail(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match stored(&state, &id).await {
        Ok(a) => Json(view_of(&state, &a).await).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Applies `update` with compare-and-set, re-reading and retrying when another writer got there first.
async fn update(
    state: &AppState,
    id: &str,
    update: AccountUpdate,
) -> Result<Account, GatewayError> {
    let mut last = None;
    for _ in 0..3 {
        let a = stored(state, id).await?;
        match state
            .store
            .update_account(a.id, a.version, update.clone())
            .await
        {
            Ok(a) => return Ok(a),
            Err(e @ StoreError::Conflict { .. }) => last = Some(e),
            Err(e) => return Err(store_err(e)),
        }
    }
    Err(last
        .map(store_err)
        .unwrap_or_else(|| GatewayError::Conflict("the account kept changing; try again".into())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    key: String,
    #[serde(default)]
    priority: i32,
    #[serde(default = "one")]
    weight: u32,
    max_concurrency: Option<u32>,
    #[serde(default)]
    tags: Vec<String>,
}

fn one() -> u32 {
    1
}

fn check_fields(name: Option<&str>, weight: Option<u32>) -> Result<(), GatewayError> {
    if name.is_some_and(|n| n.trim().is_empty()) {
        return Err(GatewayError::InvalidRequest(
            "`name` must not be empty".into(),
        ));
    }
    if weight == Some(0) {
        return Err(GatewayError::InvalidRequest(
            "`weight` must be at least 1".into(),
        ));
    }
    Ok(())
}

async fn add_key(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let result = async {
        let k: NewKey = parse(&body)?;
        check_fields(Some(&k.name), Some(k.weight))?;
        let key = k.key.trim().to_string();
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(GatewayError::InvalidRequest(
                "`key` must be an API key (non-empty, no spaces)".into(),
            ));
        }
        let a = state
            .store
            .insert_account(NewAccount {
                priority: k.priority,
                weight: k.weight,
                ..NewAccount::api_key(k.name.trim().to_string(), key)
            })
            .await
            .map_err(store_err)?;
        let a = if k.max_concurrency.is_some() || !k.tags.is_empty() {
            let u = AccountUpdate {
                max_concurrency: Patch::set_some(k.max_concurrency.filter(|n| *n > 0)),
                tags: Some(k.tags),
                ..Default::default()
            };
            update(&state, &a.id.to_string(), u).await?
        } else {
            a
        };
        let detail = format!("added API-key account {:?} (id {})", a.name, a.id);
        Ok(with_detail(
            (StatusCode::CREATED, Json(view_of(&state, &a).await)),
            detail,
        ))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

/// `max_concurrency`: a number sets it, `null` (or 0) makes it unlimited, absent leaves it.
fn patch_u32<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Patch<u32>, D::Error> {
    Ok(match Option::<u32>::deserialize(d)? {
        Some(0) | None => Patch::Clear,
        Some(n) => Patch::Set(n),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    name: Option<String>,
    priority: Option<i32>,
    weight: Option<u32>,
    #[serde(default, deserialize_with = "patch_u32")]
    max_concurrency: Patch<u32>,
    tags: Option<Vec<String>>,
}

async fn change(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        let c: Change = parse(&body)?;
        check_fields(c.name.as_deref(), c.weight)?;
        let fields: Vec<&str> = [
            c.name.as_ref().map(|_| "name"),
            c.priority.map(|_| "priority"),
            c.weight.map(|_| "weight"),
            (c.max_concurrency != Patch::Keep).then_some("max_concurrency"),
            c.tags.as_ref().map(|_| "tags"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let u = AccountUpdate {
            name: c.name.map(|n| n.trim().to_string()),
            priority: c.priority,
            weight: c.weight,
            max_concurrency: c.max_concurrency,
            tags: c.tags,
            ..Default::default()
        };
        let a = update(&state, &id, u).await?;
        let detail = format!("set {} of {:?}", fields.join(", "), a.name);
        Ok::<_, GatewayError>(with_detail(Json(view_of(&state, &a).await), detail))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn enable(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    // As `accounts enable`: back into service, and a needs-login or banned flag is cleared (the operator says it is
    // fixed).
    let u = AccountUpdate {
        disabled: Some(false),
        needs_reauth: Patch::Clear,
        banned: Patch::Clear,
        ..Default::default()
    };
    match update(&state, &id, u).await {
        Ok(a) => with_detail(
            Json(view_of(&state, &a).await),
            format!("enabled {:?}", a.name),
        ),
        Err(e) => e.into_response(),
    }
}

async fn disable(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let u = AccountUpdate {
        disabled: Some(true),
        ..Default::default()
    };
    match update(&state, &id, u).await {
        Ok(a) => with_detail(
            Json(view_of(&state, &a).await),
            format!("disabled {:?}", a.name),
        ),
        Err(e) => e.into_response(),
    }
}

async fn remove(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let result = async {
        let a = stored(&state, &id).await?;
        state.store.remove_account(a.id).await.map_err(store_err)?;
        if let Err(e) = state.pool().sync().await {
            tracing::warn!(error = %e, "admin: store sync failed after a removal");
        }
        let body = Json(serde_json::json!({ "removed": a.id, "name": a.name }));
        Ok::<_, GatewayError>(with_detail(body, format!("removed {:?}", a.name)))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Import {
    /// Each the content of one credential file (Claude Code `.credentials.json`, CLIProxyAPI `claude-*.json`).
    files: Vec<serde_json::Value>,
    /// A name for the account (only with one file).
    name: Option<String>,
}

async fn import(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let result = async {
        let i: Import = parse(&body)?;
        if i.files.is_empty() {
            return Err(GatewayError::InvalidRequest("`files` is empty".into()));
        }
        if i.name.is_some() && i.files.len() != 1 {
            return Err(GatewayError::InvalidRequest(format!(
                "`name` needs exactly one file, got {}",
                i.files.len()
            )));
        }
        let mut results = Vec::new();
        let mut names = Vec::new();
        for (n, file) in i.files.into_iter().enumerate() {
            let source = std::path::PathBuf::from(format!("files[{n}]"));
            let c = match crate::import::read_value(file, &source) {
                Ok(c) => c,
                Err(e) => {
                    results.push(serde_json::json!({ "error": e.to_string() }));
                    continue;
                }
            };
            let (a, saved) =
                crate::store::upsert_one(state.store.as_ref(), &c.account, i.name.as_deref())
                    .await
                    .map_err(store_err)?;
            names.push(a.name.clone());
            let view = view_of(&state, &a).await;
            results.push(serde_json::json!({ "saved": saved.as_str(), "account": view }));
        }
        let status = if names.is_empty() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        let detail = format!("imported {}", names.join(", "));
        Ok(with_detail(
            (status, Json(serde_json::json!({ "results": results }))),
            detail,
        ))
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
