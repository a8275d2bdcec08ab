//! `/admin/keys`: create (the key is in the answer, once), list, change, revoke.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use axum::{Json, Router};

use crate::error::GatewayError;
use crate::keys::KeyPatch;
use crate::state::AppState;
use crate::store::tenants::TenantStore;
use crate::store::StoreError;
use crate::tenants::manage::{self, KeyError, KeySpec, KeyView};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/keys", get(list).post(create))
        .route("/admin/keys/{id}", patch(update).delete(revoke))
}

/// The store's client-key tables, or why there are none.
pub(crate) fn tenants(state: &AppState) -> Result<&dyn TenantStore, GatewayError> {
    state
        .store
        .tenants()
        .ok_or_else(|| GatewayError::Unavailable {
            message: "this store keeps no client keys".into(),
            retry_after_secs: None,
        })
}

pub(crate) fn store_error(e: StoreError) -> GatewayError {
    match e {
        StoreError::KeyNotFound(_) | StoreError::NotFound(_) => {
            GatewayError::NotFound(e.to_string())
        }
        StoreError::DuplicateKey(_) => GatewayError::InvalidRequest(e.to_string()),
        other => GatewayError::Unavailable {
            message: other.to_string(),
            retry_after_secs: Some(1),
        },
    }
}

fn key_error(e: KeyError) -> GatewayError {
    match e {
        KeyError::Invalid(m) => GatewayError::InvalidRequest(m),
        KeyError::Store(e) => store_error(e),
    }
}

/// A JSON body, or a 400 naming what is wrong with it.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidRequest(format!("request body: {e}")))
}

/// This replica serves a change made through it at once (the others within their next reload).
async fn reload(state: &AppState) {
    if let Err(e) = state.sync_keys().await {
        tracing::warn!(error = %e, "admin: could not reload client keys after a change");
    }
}

async fn create(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let result = async {
        let spec: KeySpec = parse(&body)?;
        let (key, secret) = manage::create(tenants(&state)?, spec)
            .await
            .map_err(key_error)?;
        let mut view = serde_json::to_value(KeyView::of(key, state.clock.now()))
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        view["key"] = serde_json::Value::String(secret.0);
        reload(&state).await;
        Ok::<_, GatewayError>((StatusCode::CREATED, Json(view)).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn list(State(state): State<AppState>) -> Response {
    let result = async {
        let keys = tenants(&state)?.list_keys().await.map_err(store_error)?;
        let now = state.clock.now();
        let views: Vec<KeyView> = keys.into_iter().map(|k| KeyView::of(k, now)).collect();
        Ok::<_, GatewayError>(Json(serde_json::json!({ "keys": views })).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let result = async {
        let patch: KeyPatch = parse(&body)?;
        let key = manage::update(tenants(&state)?, &id, patch)
            .await
            .map_err(key_error)?;
        reload(&state).await;
        Ok::<_, GatewayError>(Json(KeyView::of(key, state.clock.now())).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn revoke(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let result = async {
        let key = manage::revoke(tenants(&state)?, &id)
            .await
            .map_err(key_error)?;
        reload(&state).await;
        Ok::<_, GatewayError>(
            Json(serde_json::json!({ "revoked": key.id, "name": key.name })).into_response(),
        )
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
