//! The cluster as the store knows it (`GET /admin/cluster`): every replica's heartbeat — version, when it started,
//! when it was last seen, its accounts and load — and whether this replica reaches the store now; and the effective
//! configuration with secrets redacted (`GET /admin/config`).

use std::time::Duration;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::error::GatewayError;
use crate::state::AppState;
use crate::store::ops::ReplicaBeat;

/// How often a replica writes its heartbeat.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A replica not seen for this long is shown as gone.
pub const ALIVE_WITHIN: Duration = Duration::from_secs(20);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/cluster", get(cluster))
        .route("/admin/config", get(config))
}

/// This replica's heartbeat as of now.
fn beat(state: &AppState) -> ReplicaBeat {
    let entries = state.pool().entries();
    ReplicaBeat {
        id: state.operator.replica_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: state.operator.started_at,
        seen_at: state.clock.now(),
        detail: serde_json::json!({
            "listen": state.config.listen.to_string(),
            "accounts": entries.len(),
            "usable": state.pool().any_usable(),
            "in_flight": entries.iter().map(|e| e.in_flight()).sum::<usize>(),
        }),
    }
}

/// Writes this replica's heartbeat (called by the server's background loop every [`HEARTBEAT`]).
pub async fn heartbeat(state: &AppState) {
    if let Some(ops) = state.store.ops() {
        if let Err(e) = ops.heartbeat(beat(state)).await {
            tracing::debug!(error = %e, "could not write the replica heartbeat");
        }
    }
}

async fn cluster(State(state): State<AppState>) -> Response {
    let store = match state.store.ping().await {
        Ok(()) => serde_json::json!({ "state": "ok", "describe": state.store.describe() }),
        Err(e) => {
            serde_json::json!({ "state": "unreachable", "error": e.to_string(), "describe": state.store.describe() })
        }
    };
    let now = state.clock.now();
    let since = now - chrono::Duration::hours(24);
    let alive_after = now - chrono::Duration::from_std(ALIVE_WITHIN).unwrap_or_default();
    let beats = match state.store.ops() {
        Some(ops) => ops.replicas(since).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let mut replicas: Vec<serde_json::Value> = beats
        .into_iter()
        .filter(|b| b.id != state.operator.replica_id)
        .map(|b| {
            let alive = b.seen_at >= alive_after;
            let mut v = serde_json::to_value(&b).unwrap_or_default();
            v["alive"] = alive.into();
            v["this"] = false.into();
            v
        })
        .collect();
    let mut me = serde_json::to_value(beat(&state)).unwrap_or_default();
    me["alive"] = true.into();
    me["this"] = true.into();
    replicas.insert(0, me);
    let alive = replicas.iter().filter(|r| r["alive"] == true).count();
    Json(serde_json::json!({
        "this": state.operator.replica_id,
        "store": store,
        "alive": alive,
        "replicas": replicas,
    }))
    .into_response()
}

async fn config(State(state): State<AppState>) -> Response {
    let v = state.config.redacted();
    if v.is_null() {
        return GatewayError::Internal("the configuration could not be shown".into())
            .into_response();
    }
    Json(v).into_response()
}
