//! `GET /v1/models` and `/v1/models/{id}` in OpenAI shape, built from the upstream's Anthropic answer.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::{bad_upstream, copy_headers, from_anthropic, read_limited};

const MAX_MODELS_BODY: usize = 4 * 1024 * 1024;

/// One Anthropic model object → `{"id","object":"model","created","owned_by":"anthropic"}`.
pub fn model(m: &Value) -> Value {
    let created = m
        .get("created_at")
        .and_then(Value::as_str)
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map_or(0, |t| t.timestamp());
    json!({"id": m["id"], "object": "model", "created": created, "owned_by": "anthropic"})
}

/// An Anthropic list (`{"data":[…]}`) or single model → its OpenAI shape.
pub fn reshape(v: &Value) -> Value {
    match v.get("data").and_then(Value::as_array) {
        Some(list) => json!({"object": "list", "data": list.iter().map(model).collect::<Vec<_>>()}),
        None => model(v),
    }
}

pub async fn translate(response: Response) -> Response {
    if !response.status().is_success() {
        return from_anthropic(response).await;
    }
    let (parts, body) = response.into_parts();
    let Some(bytes) = read_limited(body, MAX_MODELS_BODY).await else {
        return bad_upstream("the upstream models answer could not be read");
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return bad_upstream("the upstream models answer is not JSON");
    };
    let mut out = (StatusCode::OK, axum::Json(reshape(&v))).into_response();
    copy_headers(&parts.headers, out.headers_mut());
    out
}
