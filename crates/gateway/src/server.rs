//! Assembles the HTTP surfaces (Anthropic, OpenAI, admin, dashboard) with their authentication, serves health, readiness and
//! metrics, and runs the background loops' lifecycle (store sync, the proactive refresh scan, usage flushes, the replica
//! heartbeat).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

use crate::error::{Dialect, GatewayError};
use crate::state::AppState;

/// Every surface on one listener; without the dashboard and `/admin/*` when `dashboard_listen` puts them on their own
/// ([`dashboard_router`]).
pub fn router(state: AppState) -> Router {
    let mut app = api_routes(&state);
    if state.config.dashboard_listen.is_none() {
        app = app.merge(operator_routes(&state));
    }
    finish(app, state)
}

/// The dashboard and the admin API alone, for `dashboard_listen`.
pub fn dashboard_router(state: AppState) -> Router {
    finish(operator_routes(&state), state)
}

fn api_routes(state: &AppState) -> Router<AppState> {
    let api = crate::anthropic::routes()
        .merge(crate::openai::routes())
        .merge(crate::openai::responses::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::client_auth,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ));
    Router::new()
        .merge(api)
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// The admin API (authenticated; every state-changing call audited), its login, and the dashboard page.
fn operator_routes(state: &AppState) -> Router<AppState> {
    let admin = crate::admin::routes()
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::admin::audit::record,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::auth::admin_auth,
        ));
    Router::new()
        .merge(admin)
        .merge(crate::admin::session::public_routes())
        .merge(crate::dashboard::routes())
}

fn finish(app: Router<AppState>, state: AppState) -> Router {
    app.fallback(
        |method: Method, uri: axum::http::Uri, headers: HeaderMap| async move {
            GatewayError::NotFound(format!("no route for {method} {}", uri.path()))
                .into_dialect_response(Dialect::of_request(uri.path(), &headers))
        },
    )
    .layer(middleware::from_fn_with_state(
        state.clone(),
        crate::browser::guard,
    ))
    .with_state(state)
}

/// Counts API requests by route (the matched pattern, so the label set stays bounded) and status, and records the
/// time to the response head (for streams: until the upstream's `message_start`).
async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route: std::borrow::Cow<'static, str> = match req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str())
    {
        Some("/v1/messages") => "/v1/messages".into(),
        Some("/v1/chat/completions") => "/v1/chat/completions".into(),
        Some("/v1/responses") => "/v1/responses".into(),
        Some("/v1/messages/count_tokens") => "/v1/messages/count_tokens".into(),
        Some(other) => other.to_string().into(),
        None => "unmatched".into(),
    };
    counted(&state, &route, req, |req| next.run(req)).await
}

/// [`count_requests`] around `next` for `route`, for the routes that skip the router (`crate::dispatch`).
pub(crate) async fn counted<F, Fut>(
    state: &AppState,
    route: &str,
    req: Request,
    next: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    let started = tokio::time::Instant::now();
    let response = next(req).await;
    state
        .proxy
        .metrics()
        .request(route, response.status().as_u16(), started.elapsed());
    state.operator.stats.record(
        state.clock.now().timestamp(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

async fn readyz(State(state): State<AppState>) -> Response {
    let store_ok = state.store.ping().await;
    let usable = state.pool().any_usable();
    let body = serde_json::json!({
        "store": if store_ok.is_ok() { "ok" } else { "unreachable" },
        "accounts": state.pool().entries().len(),
        "ready": store_ok.is_ok() && usable,
        "reason": match (&store_ok, usable) {
            (Err(e), _) => Some(format!("store unreachable: {e}")),
            (Ok(()), false) => Some("no usable account: add one, enable one, or log in again".to_string()),
            _ => None,
        },
    });
    let status = if store_ok.is_ok() && usable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(h) => ([("content-type", "text/plain; version=0.0.4")], h.render()).into_response(),
        None => GatewayError::NotFound("metrics are not enabled".into()).into_response(),
    }
}

/// Keeps the pool in step with the store (accounts added, disabled or re-imported by the CLI) and refreshes tokens
/// ahead of expiry. Runs until `shutdown`.
pub async fn background(state: AppState, shutdown: CancellationToken) {
    let mut sync = tokio::time::interval(Duration::from_secs(1));
    sync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first scan comes one interval after start: requests refresh what they need on their own meanwhile.
    let scan_every = Duration::from_secs(state.config.refresh.scan_interval_secs);
    let mut scan = tokio::time::interval_at(tokio::time::Instant::now() + scan_every, scan_every);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut alerts = tokio::time::interval(crate::alerts::CHECK_EVERY);
    alerts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    state
        .operator
        .alerts
        .start(state.pool().engine().tasks(), shutdown.clone());
    let mut heartbeat = tokio::time::interval(crate::admin::cluster::HEARTBEAT);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut flush = tokio::time::interval(crate::clock::secs(state.config.usage_flush_secs));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Request records and key counters: once a second, so key limits hold across replicas within a second.
    let mut records = tokio::time::interval(Duration::from_secs(1));
    records.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prune = tokio::time::interval(Duration::from_secs(3600));
    prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Replicas sharing PostgreSQL hear about changes at once; the 1 s poll stays as the fallback.
    let changed = Arc::new(tokio::sync::Notify::new());
    if let Some(url) = &state.config.store_url {
        #[allow(clippy::disallowed_methods)] // ends when `shutdown` is cancelled
        tokio::spawn(crate::store::postgres::watch(
            url.clone(),
            changed.clone(),
            shutdown.clone(),
        ));
    }
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sync.tick() => sync_once(&state).await,
            _ = changed.notified() => sync_once(&state).await,
            _ = scan.tick() => state.pool().refresh_ahead(),
            _ = records.tick() => flush_records(&state).await,
            _ = prune.tick() => {
                let usage = state.proxy.usage();
                if let Err(e) = usage.prune(&state.store, state.config.usage_retention_days, state.config.usage_rollup_retention_days).await {
                    tracing::warn!(error = %e, "could not delete usage past retention");
                }
            }
            _ = heartbeat.tick() => crate::admin::cluster::heartbeat(&state).await,
            _ = alerts.tick() => check_alerts(&state),
            _ = flush.tick() => {
                if let Err(e) = state.pool().flush_usage().await {
                    tracing::warn!(error = %e, "could not write usage; kept for the next flush");
                }
            }
        }
    }
    if let Err(e) = state.pool().flush_usage().await {
        tracing::warn!(error = %e, "could not write the last usage batch");
    }
    flush_records(&state).await;
}

/// Writes request records and key counters, and adopts every replica's key counters.
pub async fn flush_records(state: &AppState) {
    if let Err(e) = state.proxy.usage().flush(&state.store).await {
        tracing::warn!(error = %e, "could not write request records; kept for the next flush");
    }
}

/// Compares the pool's alert conditions with the episodes in progress (see `crate::alerts`).
fn check_alerts(state: &AppState) {
    let budgets = state.keys().budget_use(state.clock.now());
    let conditions =
        crate::alerts::watch::conditions(&state.pool().entries(), &budgets, state.clock.as_ref());
    state.operator.alerts.observe(
        conditions,
        crate::clock::rfc3339(state.clock.now()),
        &state.operator.replica_id,
    );
}

async fn sync_once(state: &AppState) {
    if let Err(e) = state.pool().sync().await {
        tracing::warn!(error = %e, "could not reload accounts from the store");
    }
    if let Err(e) = state.sync_keys().await {
        tracing::warn!(error = %e, "could not reload client keys from the store");
    }
    if let Err(e) = state.pool().sync_cooldowns().await {
        tracing::debug!(error = %e, "could not read shared cooldowns");
    }
}
