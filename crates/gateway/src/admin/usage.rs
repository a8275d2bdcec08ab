//! `/admin/usage` (rollups grouped by key, account or model, optionally per hour or day) and `/admin/requests` (the
//! recent request log: metadata only, never bodies or secrets).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::keys::{store_error, tenants};
use crate::error::GatewayError;
use crate::state::AppState;
use crate::store::tenants::{Bucket, GroupBy, RequestQuery, UsageQuery, UsageRow};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/usage", get(usage))
        .route("/admin/requests", get(requests))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageParams {
    group_by: Option<GroupBy>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    bucket: Option<Bucket>,
}

/// One row as the API shows it: the group's name under `key`, `account` or `model`.
pub fn row_json(group_by: GroupBy, row: &UsageRow) -> serde_json::Value {
    let mut v = serde_json::to_value(row).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        let name = obj.remove("name").unwrap_or_default();
        let field = match group_by {
            GroupBy::Key => "key",
            GroupBy::Account => "account",
            GroupBy::Model => "model",
        };
        obj.insert(field.into(), name);
        if let Some(cost) = obj.remove("cost_nanos") {
            obj.insert("cost_usd".into(), cost);
        }
    }
    v
}

async fn usage(
    State(state): State<AppState>,
    params: Result<Query<UsageParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let Query(p) = params.map_err(|e| GatewayError::InvalidRequest(e.body_text()))?;
        let group_by = p.group_by.unwrap_or(GroupBy::Key);
        let to =
            p.to.unwrap_or_else(|| state.clock.now() + chrono::Duration::hours(1));
        let from = p.from.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        // Rollups are hourly: a bound inside an hour includes that whole hour.
        let q = UsageQuery {
            group_by,
            from: hour_floor(from),
            to,
            bucket: p.bucket,
        };
        let rows = tenants(&state)?.usage(q).await.map_err(store_error)?;
        let rows: Vec<serde_json::Value> = rows.iter().map(|r| row_json(group_by, r)).collect();
        Ok::<_, GatewayError>(Json(serde_json::json!({ "rows": rows })).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

fn hour_floor(t: DateTime<Utc>) -> DateTime<Utc> {
    let ms = t.timestamp_millis().div_euclid(3_600_000) * 3_600_000;
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(t)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestParams {
    key: Option<String>,
    account: Option<String>,
    status: Option<u16>,
    limit: Option<u32>,
}

async fn requests(
    State(state): State<AppState>,
    params: Result<Query<RequestParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let result = async {
        let Query(p) = params.map_err(|e| GatewayError::InvalidRequest(e.body_text()))?;
        let q = RequestQuery {
            key: p.key,
            account: p.account,
            status: p.status,
            limit: p.limit.unwrap_or(100).clamp(1, 10_000),
        };
        let rows = tenants(&state)?
            .recent_requests(q)
            .await
            .map_err(store_error)?;
        Ok::<_, GatewayError>(Json(serde_json::json!({ "requests": rows })).into_response())
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}
