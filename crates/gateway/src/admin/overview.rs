//! `GET /admin/overview`: the dashboard's first screen in one call — this replica's requests per minute, error rate
//! and p50/p99 latency (`stats`), the tokens and cost of today (UTC, every replica, from the usage rollups) and the
//! accounts counted by state.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::state::AppState;
use crate::view::live_state;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/overview", get(overview))
}

async fn overview(State(state): State<AppState>) -> Response {
    let now = state.clock.now();
    let stats = state.operator.stats.view(now.timestamp());
    let mut by_state = std::collections::BTreeMap::<&'static str, usize>::new();
    for e in state.pool().entries().iter() {
        *by_state
            .entry(live_state(e, &e.cell.account()))
            .or_default() += 1;
    }
    Json(serde_json::json!({
        "at": crate::clock::rfc3339(now),
        "replica": state.operator.replica_id,
        "requests": stats,
        "today": today(&state, now).await,
        "accounts_by_state": by_state,
    }))
    .into_response()
}

/// Requests, tokens and cost since midnight UTC; `null` when the store keeps no usage or cannot be read.
async fn today(state: &AppState, now: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    use crate::store::tenants::{GroupBy, UsageQuery};
    let Some(tenants) = state.store.tenants() else {
        return serde_json::Value::Null;
    };
    let midnight = now
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc())
        .unwrap_or(now);
    let q = UsageQuery {
        group_by: GroupBy::Model,
        from: midnight,
        to: now + chrono::Duration::hours(1),
        bucket: None,
    };
    match tenants.usage(q).await {
        Ok(rows) => {
            let requests: u64 = rows.iter().map(|r| r.requests).sum();
            let tokens: u64 = rows.iter().map(|r| r.tokens.total()).sum();
            let cost: i64 = rows.iter().map(|r| r.cost_nanos).sum();
            serde_json::json!({
                "requests": requests,
                "tokens": tokens,
                "cost_usd": crate::store::tenants::nanos_to_usd(cost),
            })
        }
        Err(e) => {
            tracing::debug!(error = %e, "overview: usage unreadable");
            serde_json::Value::Null
        }
    }
}
