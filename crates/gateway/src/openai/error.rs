//! Errors in the OpenAI shape: requests the translation refuses (with the parameter named), and Anthropic-shaped error
//! responses (the upstream's, or the gateway's own from the forwarding path) reshaped for OpenAI clients.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use crate::error::{openai_error_body, openai_kind};

/// Error bodies are small; anything longer is cut rather than buffered.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A request the translation will not send upstream: a 400 naming the parameter, never a silently different answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    /// The offending parameter, as a path into the request (`messages[2].content[0].image_url.url`).
    pub param: Option<String>,
    pub message: String,
    /// `unsupported_parameter` for things Claude cannot do, `invalid_value` for malformed input.
    pub code: &'static str,
}

impl BadRequest {
    /// Something Claude cannot do (a valid OpenAI request this gateway cannot honour).
    pub fn unsupported(param: impl Into<String>, why: impl std::fmt::Display) -> BadRequest {
        let param = param.into();
        BadRequest {
            message: format!("{param}: {why}"),
            param: Some(param),
            code: "unsupported_parameter",
        }
    }

    /// Malformed input.
    pub fn invalid(param: impl Into<String>, why: impl std::fmt::Display) -> BadRequest {
        let param = param.into();
        BadRequest {
            message: format!("{param}: {why}"),
            param: Some(param),
            code: "invalid_value",
        }
    }

    /// Malformed input not tied to one parameter (the body as a whole).
    pub fn body(why: impl Into<String>) -> BadRequest {
        BadRequest {
            param: None,
            message: why.into(),
            code: "invalid_value",
        }
    }

    pub fn openai_body(&self) -> serde_json::Value {
        openai_error_body(
            &self.message,
            "invalid_request_error",
            self.param.as_deref(),
            Some(self.code),
        )
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        tracing::debug!(error = %self.message, "openai request refused");
        let mut r = (StatusCode::BAD_REQUEST, axum::Json(self.openai_body())).into_response();
        crate::error::mark_own(r.headers_mut(), false);
        r
    }
}

/// The OpenAI error body for an Anthropic error body `{"type":"error","error":{"type","message"}}` (or anything else,
/// described by its status).
pub fn from_anthropic_body(status: StatusCode, body: &[u8]) -> serde_json::Value {
    let parsed = crate::error::AnthropicError::parse(body);
    let anthropic_type = parsed.kind.unwrap_or_else(|| {
        if status.is_client_error() {
            "invalid_request_error".into()
        } else {
            "api_error".into()
        }
    });
    let message = parsed.message.unwrap_or_else(|| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        format!("upstream answered {}: {text}", status.as_u16())
    });
    let (kind, code) = openai_kind(status, &anthropic_type);
    openai_error_body(&message, kind, None, code)
}

/// Reshapes a non-2xx Anthropic-shaped response: same status, the useful headers (`retry-after`, `retry-after-ms`,
/// `x-should-retry`, rate-limit headers, `request-id`), OpenAI body.
pub async fn from_anthropic(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let bytes = read_limited(body, MAX_ERROR_BODY).await.unwrap_or_default();
    let body = from_anthropic_body(parts.status, &bytes);
    let mut out = (parts.status, axum::Json(body)).into_response();
    copy_headers(&parts.headers, out.headers_mut());
    out
}

/// Copies response headers except the ones that describe the body being replaced.
pub fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if name != "content-type" && name != "content-length" {
            to.append(name.clone(), value.clone());
        }
    }
    // OpenAI SDKs expose `x-request-id` as the request id.
    if let Some(id) = from.get("request-id") {
        to.insert("x-request-id", id.clone());
    }
}

/// Reads a body up to `limit` bytes; `None` if it broke or was longer.
pub async fn read_limited(body: Body, limit: usize) -> Option<bytes::Bytes> {
    http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .ok()
        .map(|c| c.to_bytes())
}

/// A 502 in OpenAI shape for an upstream answer that could not be read or understood.
pub fn bad_upstream(message: &str) -> Response {
    let mut r = (
        StatusCode::BAD_GATEWAY,
        axum::Json(openai_error_body(
            message,
            "server_error",
            None,
            Some("bad_upstream_response"),
        )),
    )
        .into_response();
    crate::error::mark_own(r.headers_mut(), true);
    r
}
