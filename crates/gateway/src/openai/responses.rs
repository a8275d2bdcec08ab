//! The OpenAI Responses API: `POST /v1/responses`, for Codex CLI, the OpenAI Agents SDK and newer OpenAI SDK code.
//!
//! Another adapter over the same forwarding path as `/v1/messages` and `/v1/chat/completions`: the body is translated
//! to a Messages body ([`request`], with [`input`] items and [`tools`]), handed to
//! [`Proxy::forward`](crate::proxy::Proxy::forward) (same selection, refresh, cooldowns, affinity, failover, usage),
//! and the answer translated back: errors to the OpenAI error shape (`crate::openai::error`), JSON to a `response`
//! object ([`output`]), SSE to Responses events ([`stream`]). `previous_response_id` continues a conversation kept by
//! [`stored`]. Conversation affinity uses `prompt_cache_key` (Codex sends its session id there), then Codex's
//! `session-id` header, then the gateway's usual keys.

pub mod input;
pub mod output;
pub mod request;
pub mod stored;
pub mod stream;
pub mod tools;

#[cfg(test)]
mod tests;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::GatewayError;
use crate::proxy::Forward;
use crate::state::AppState;
use request::Translated;
use stored::{LoadError, Saver};

/// The Responses routes (authentication is layered on by `server`).
pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/v1/responses", axum::routing::post(create))
}

pub async fn create(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = match crate::body::read_body(&state, &parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return e.into_openai_response(),
    };
    // Stored responses belong to the key that made them; an open gateway (no client keys) has one owner.
    let open = matches!(
        parts.extensions.get::<crate::tenants::Tenant>(),
        None | Some(crate::tenants::Tenant::Open)
    );
    let owner = stored::owner(
        (!open)
            .then(|| crate::auth::presented_key(&parts.headers))
            .flatten(),
    );
    let mut translated = match translate(&state, &body, &owner).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let forward = match forward_request(&state, parts.headers, &translated) {
        Ok(f) => f.with_client(&parts.extensions, "/v1/responses"),
        Err(e) => return e.into_openai_response(),
    };
    let saver = translated.store.then(|| Saver {
        keeper: state.stored_responses.clone(),
        clock: state.clock.clone(),
        owner,
        messages: std::mem::take(&mut translated.messages),
    });
    let answer = state.proxy.forward(forward).await;
    translate_answer(answer, translated, saver, state.clock.now().timestamp()).await
}

/// Parses the body, loads the conversation `previous_response_id` continues, and translates.
async fn translate(state: &AppState, body: &[u8], owner: &str) -> Result<Translated, Response> {
    let req = request::parse(body).map_err(IntoResponse::into_response)?;
    let prior = match request::previous_response_id(&req).map_err(IntoResponse::into_response)? {
        None => Vec::new(),
        Some(id) => match stored::load(&state.store, &state.clock, id, owner).await {
            Ok(m) => m,
            Err(LoadError::BadRequest(e)) => return Err(e.into_response()),
            Err(LoadError::Store(e)) => {
                return Err(GatewayError::Unavailable {
                    message: format!("could not read the stored response: {e}"),
                    retry_after_secs: Some(1),
                }
                .into_openai_response())
            }
        },
    };
    request::translate(&req, prior).map_err(IntoResponse::into_response)
}

fn forward_request(
    state: &AppState,
    mut headers: HeaderMap,
    t: &Translated,
) -> Result<Forward, GatewayError> {
    let body = serde_json::to_vec(&t.body)
        .map_err(|e| GatewayError::Internal(format!("could not encode the body: {e}")))?;
    let cache_key = cache_key(t.prompt_cache_key.as_deref(), &headers);
    headers.remove("accept");
    headers.insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    let mut forward = Forward::messages_with_sessions(
        "/v1/messages".into(),
        headers,
        body.into(),
        &state.config.pool.session_headers,
    )?;
    if let Some(k) = cache_key {
        forward.affinity = crate::affinity::conversation_key(Some(&k), None, &[]);
    }
    Ok(forward)
}

/// The conversation id for affinity: `prompt_cache_key`, else Codex's `session-id` header.
fn cache_key(prompt_cache_key: Option<&str>, headers: &HeaderMap) -> Option<String> {
    prompt_cache_key
        .filter(|k| !k.is_empty())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get("session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
}

async fn translate_answer(
    answer: Response,
    t: Translated,
    saver: Option<Saver>,
    created_at: i64,
) -> Response {
    if !answer.status().is_success() {
        return crate::openai::error::from_anthropic(answer).await;
    }
    if crate::openai::stream::is_event_stream(&answer) {
        let translator = stream::Translator::new(t.echo, t.names, created_at, t.model);
        return stream::translate(answer, translator, saver);
    }
    let (parts, body) = answer.into_parts();
    let Some(bytes) =
        crate::openai::error::read_limited(body, crate::openai::MAX_RESPONSE_BODY).await
    else {
        return crate::openai::error::bad_upstream(
            "the upstream answer broke off or was too large",
        );
    };
    let Ok(message) = serde_json::from_slice::<Value>(&bytes) else {
        return crate::openai::error::bad_upstream("the upstream answer is not JSON");
    };
    let response = output::from_message(&message, &t.echo, &t.names, created_at, &t.model);
    if let Some(saver) = saver {
        let content = message
            .get("content")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let id = response["id"].as_str().unwrap_or_default().to_string();
        saver.save(&id, content).await;
    }
    let mut out = (StatusCode::OK, axum::Json(response)).into_response();
    crate::openai::error::copy_headers(&parts.headers, out.headers_mut());
    out
}
