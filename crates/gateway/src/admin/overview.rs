//! `GET /admin/overview`: the dashboard's first screen in one call — this replica's requests per minute, error rate
//! and p50/p99 latency (`stats`), and the accounts counted by state.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::state::AppState;
use crate::view::AccountView;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/overview", get(overview))
}

async fn overview(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    let stats = state.operator.stats.view(now.timestamp());
    let mut by_state = std::collections::BTreeMap::<&'static str, usize>::new();
    for e in state.pool().entries().iter() {
        *by_state
            .entry(AccountView::live(e, state.clock.as_ref()).state)
            .or_default() += 1;
    }
    Json(serde_json::json!({
        "at": crate::clock::rfc3339(now),
        "replica": state.operator.replica_id,
        "requests": stats,
        "accounts_by_state": by_state,
    }))
    .into_response()
}
