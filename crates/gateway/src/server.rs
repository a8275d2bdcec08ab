//! The HTTP server: routes, client and admin authentication, health, metrics, and the background loops (store sync,
//! proactive refresh).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::BodyExt;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::error::{Dialect, GatewayError};
use crate::oauth::OAuthClient;
use crate::pool::Pool;
use crate::proxy::{Forward, Proxy};
use crate::refresh::{RefreshEngine, RefreshSettings};
use crate::store::SharedStore;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub proxy: Proxy,
    pub clock: SharedClock,
    pub metrics: Option<PrometheusHandle>,
}

impl AppState {
    pub fn pool(&self) -> &Arc<Pool> {
        self.proxy.pool()
    }
}

/// Builds the shared HTTP client for upstream calls: connect and per-read timeouts, never a total deadline.
pub fn http_client(config: &Config) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(config.upstream.connect_timeout())
        .read_timeout(config.upstream.read_timeout())
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .user_agent(concat!("claude-gateway/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Assembles the gateway around a store.
pub fn build_state(
    config: Config,
    store: SharedStore,
    clock: SharedClock,
    metrics: Option<PrometheusHandle>,
) -> Result<AppState, reqwest::Error> {
    let http = http_client(&config)?;
    let oauth = OAuthClient::new(http.clone(), config.oauth.clone(), clock.clone());
    let engine = RefreshEngine::new(
        store.clone(),
        Arc::new(oauth),
        clock.clone(),
        RefreshSettings::from(&config.refresh),
    );
    let pool = Arc::new(Pool::new(
        store.clone(),
        engine,
        crate::pool::PoolSettings::from(&config.pool),
    ));
    let proxy = Proxy::new(
        http,
        config.upstream.base_url.clone(),
        pool,
        config.pool.clone(),
    );
    Ok(AppState {
        config: Arc::new(config),
        store,
        proxy,
        clock,
        metrics,
    })
}

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route(
            "/v1/chat/completions",
            post(crate::openai::chat_completions),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), client_auth))
        .route_layer(middleware::from_fn(count_requests));
    let admin = crate::admin::router()
        .route_layer(middleware::from_fn_with_state(state.clone(), admin_auth));
    Router::new()
        .merge(api)
        .merge(admin)
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(
            |method: Method, uri: axum::http::Uri, headers: HeaderMap| async move {
                GatewayError::NotFound(format!("no route for {method} {}", uri.path()))
                    .into_dialect_response(Dialect::of_request(uri.path(), &headers))
            },
        )
        .with_state(state)
}

/// Counts API requests by route (the matched pattern, so the label set stays bounded) and status, and records the
/// time to the response head (for streams: until the upstream's `message_start`).
async fn count_requests(req: Request, next: Next) -> Response {
    let route: std::borrow::Cow<'static, str> = match req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str())
    {
        Some("/v1/messages") => "/v1/messages".into(),
        Some("/v1/chat/completions") => "/v1/chat/completions".into(),
        Some("/v1/messages/count_tokens") => "/v1/messages/count_tokens".into(),
        Some(other) => other.to_string().into(),
        None => "unmatched".into(),
    };
    let started = tokio::time::Instant::now();
    let response = next.run(req).await;
    let status = crate::proxy::status_label(response.status().as_u16());
    metrics::counter!("gateway_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("gateway_response_head_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Compares secrets in time independent of where they differ.
fn secret_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

async fn client_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let keys = &state.config.client_keys;
    if !keys.is_empty() {
        let dialect = Dialect::of_request(req.uri().path(), req.headers());
        match presented_key(req.headers()) {
            None => {
                return GatewayError::Unauthorized(
                    "missing client key: send it as x-api-key or Authorization: Bearer".into(),
                )
                .into_dialect_response(dialect)
            }
            Some(k) if !keys.iter().any(|c| secret_eq(c, k)) => {
                return GatewayError::Unauthorized("invalid client key".into())
                    .into_dialect_response(dialect)
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

async fn admin_auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let ok = match (&state.config.admin_key, presented_key(req.headers())) {
        (Some(admin), Some(k)) => secret_eq(admin, k),
        _ => false,
    };
    if !ok {
        return GatewayError::Unauthorized(
            "admin API needs Authorization: Bearer <admin_key> (set admin_key in the config)"
                .into(),
        )
        .into_response();
    }
    next.run(req).await
}

/// Reads a request body up to the configured limit; a declared length over it is refused before reading anything.
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, GatewayError> {
    let limit = state.config.max_body_bytes;
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(GatewayError::BodyTooLarge { limit })
        }
        Err(e) => Err(GatewayError::InvalidRequest(format!(
            "could not read the request body: {e}"
        ))),
    }
}

fn path_and_query(req: &Request) -> String {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string())
}

async fn messages_like(state: AppState, req: Request) -> Response {
    let pq = path_and_query(&req);
    let (parts, body) = req.into_parts();
    let body = match read_body(&state, &parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match Forward::messages_with_sessions(
        pq,
        parts.headers,
        body,
        &state.config.pool.session_headers,
    ) {
        Ok(f) => state.proxy.forward(f).await,
        Err(e) => e.into_response(),
    }
}

async fn messages(State(state): State<AppState>, req: Request) -> Response {
    messages_like(state, req).await
}

async fn count_tokens(State(state): State<AppState>, req: Request) -> Response {
    messages_like(state, req).await
}

/// Forwards upstream; OpenAI clients (no `anthropic-version`) get the answer reshaped by [`crate::openai::models`].
async fn models(State(state): State<AppState>, req: Request) -> Response {
    let dialect = Dialect::of_request(req.uri().path(), req.headers());
    let mut path_and_query = path_and_query(&req);
    if dialect == Dialect::OpenAi && req.uri().path() == "/v1/models" && req.uri().query().is_none()
    {
        // OpenAI's list has no pagination: ask for the largest page the Models API serves.
        path_and_query.push_str("?limit=1000");
    }
    let f = Forward {
        method: Method::GET,
        path_and_query,
        headers: req.headers().clone(),
        body: Bytes::new(),
        model: None,
        stream: false,
        affinity: None,
    };
    let response = state.proxy.forward(f).await;
    match dialect {
        Dialect::Anthropic => response,
        Dialect::OpenAi => crate::openai::models::translate(response).await,
    }
}

async fn model(State(state): State<AppState>, Path(_id): Path<String>, req: Request) -> Response {
    models(State(state), req).await
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
    let mut flush = tokio::time::interval(crate::clock::secs(state.config.usage_flush_secs));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            _ = scan.tick() => {
                let engine = state.pool().engine();
                for entry in state.pool().entries().iter() {
                    let a = entry.cell.account();
                    if !a.disabled && a.refreshable() {
                        engine.refresh_ahead(&entry.cell);
                    }
                }
            }
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
}

async fn sync_once(state: &AppState) {
    if let Err(e) = state.pool().sync().await {
        tracing::warn!(error = %e, "could not reload accounts from the store");
    }
    if let Err(e) = state.pool().sync_cooldowns().await {
        tracing::debug!(error = %e, "could not read shared cooldowns");
    }
}
