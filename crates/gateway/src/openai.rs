//! The OpenAI-compatible API: `POST /v1/chat/completions` on top of the same forwarding path as `/v1/messages`.
//!
//! An adapter, not a second proxy: the OpenAI body is translated to an Anthropic Messages body ([`request`]), handed to
//! [`Proxy::forward`](crate::proxy::Proxy::forward) exactly like a native request (account selection, refresh,
//! cooldowns, failover before the first byte), and the Anthropic-shaped answer is translated back: errors to the OpenAI
//! error shape ([`error`]), JSON to a `chat.completion` ([`response`]), SSE to `chat.completion.chunk`s event by event
//! ([`stream`]). `GET /v1/models` for OpenAI clients is reshaped by [`models`].

pub mod error;
pub mod messages;
pub mod models;
pub mod request;
pub mod response;
pub mod responses;
pub mod stream;
pub mod tools;

#[cfg(test)]
mod tests;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::proxy::Forward;
use crate::state::AppState;
use response::Labels;

/// Longest non-stream upstream answer read for translation (a Messages response is bounded by `max_tokens`).
pub(crate) const MAX_RESPONSE_BODY: usize = 64 * 1024 * 1024;

/// The OpenAI routes (authentication is layered on by `server`).
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(chat_completions),
    )
}

pub async fn chat_completions(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match crate::body::read_body(&state, &parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return e.into_openai_response(),
    };
    let translated = match request::translate(&body) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let upstream_body = match serde_json::to_vec(&translated.body) {
        Ok(b) => b,
        Err(e) => {
            return crate::error::GatewayError::Internal(format!("could not encode the body: {e}"))
                .into_openai_response()
        }
    };
    // The same routing as `/v1/messages`, prompt-cache affinity included (it reads the translated body).
    let forward = match Forward::messages_with_sessions(
        "/v1/messages".into(),
        upstream_headers(parts.headers),
        upstream_body.into(),
        &state.config.pool.session_headers,
    ) {
        Ok(f) => f.with_client(&parts.extensions, "/v1/chat/completions"),
        Err(e) => return e.into_openai_response(),
    };
    let labels = Labels {
        model: translated.model,
        created: state.clock.now().timestamp(),
        include_usage: translated.include_usage,
    };
    let answer = state.proxy.forward(forward).await;
    translate_answer(answer, labels).await
}

/// The client's headers for the upstream request: the header policy still applies (it drops the client's
/// `Authorization`, adds the account's credential and a default `anthropic-version`); the body is now ours, JSON.
fn upstream_headers(mut headers: HeaderMap) -> HeaderMap {
    headers.remove("accept");
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers
}

async fn translate_answer(answer: Response, labels: Labels) -> Response {
    if !answer.status().is_success() {
        return error::from_anthropic(answer).await;
    }
    if stream::is_event_stream(&answer) {
        return stream::translate(answer, labels);
    }
    let (parts, body) = answer.into_parts();
    let Some(bytes) = error::read_limited(body, MAX_RESPONSE_BODY).await else {
        return error::bad_upstream("the upstream answer broke off or was too large");
    };
    let Ok(message) = serde_json::from_slice::<Value>(&bytes) else {
        return error::bad_upstream("the upstream answer is not JSON");
    };
    let mut out = (
        StatusCode::OK,
        axum::Json(response::completion(&message, &labels)),
    )
        .into_response();
    error::copy_headers(&parts.headers, out.headers_mut());
    out
}
