//! The Anthropic surface: `/v1/messages`, `/v1/messages/count_tokens`, `/v1/models` (reshaped for OpenAI clients).

use axum::extract::{Path, Request, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;

use crate::error::Dialect;
use crate::proxy::Forward;
use crate::state::AppState;

/// The Anthropic routes (authentication is layered on by `server`).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
}

pub(crate) fn path_and_query(req: &Request) -> String {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string())
}

async fn messages_like(state: AppState, req: Request, route: &'static str) -> Response {
    let pq = path_and_query(&req);
    let (parts, body) = req.into_parts();
    let body = match crate::body::read_body(&state, &parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match Forward::messages_with_sessions(
        pq,
        parts.headers,
        body,
        &state.config.pool.session_headers,
    ) {
        Ok(f) => {
            state
                .proxy
                .forward(f.with_client(&parts.extensions, route))
                .await
        }
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn messages(State(state): State<AppState>, req: Request) -> Response {
    messages_like(state, req, "/v1/messages").await
}

pub(crate) async fn count_tokens(State(state): State<AppState>, req: Request) -> Response {
    messages_like(state, req, "/v1/messages/count_tokens").await
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
        tenant: crate::tenants::Tenant::Open,
        route: "/v1/models",
    }
    .with_client(req.extensions(), "/v1/models");
    let response = state.proxy.forward(f).await;
    match dialect {
        Dialect::Anthropic => response,
        Dialect::OpenAi => crate::openai::models::translate(response).await,
    }
}

async fn model(State(state): State<AppState>, Path(_id): Path<String>, req: Request) -> Response {
    models(State(state), req).await
}
