//! The gateway's one error type: what went wrong, whose fault it is, and whether a retry may help.
//!
//! Every error the gateway itself writes goes through [`GatewayError::into_dialect_response`], in the [`Dialect`] of the
//! route the client called ([`IntoResponse`] is the Anthropic dialect). Upstream error responses are not
//! `GatewayError`s: they pass through as they are on Anthropic routes and are reshaped by `crate::openai` on OpenAI ones.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The client sent something wrong: fix the request.
    Client,
    /// Anthropic (or the network to it) failed.
    Upstream,
    /// The gateway's own pool or store cannot serve right now.
    Gateway,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("request body is larger than the gateway's limit of {limit} bytes (max_body_bytes)")]
    BodyTooLarge { limit: u64 },
    /// The request may not be served at all (a browser origin not allowed, a `Host` this gateway does not serve, a
    /// state-changing dashboard call without its CSRF token).
    #[error("{0}")]
    Forbidden(String),
    /// The client did not send its request body within the listener's body-read timeout.
    #[error("{0}")]
    BodyTimeout(String),
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state (a name already taken, a concurrent write).
    #[error("{0}")]
    Conflict(String),
    /// Every usable account is cooling down or backing off; one is free again after `retry_after_secs`.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
    },
    /// A client key's own limit refuses the request (`limit` names it: `rpm`, `concurrency`, `tokens_per_day`,
    /// `usd_per_month`); it resets after `retry_after_secs`.
    #[error("{message}")]
    KeyLimit {
        limit: &'static str,
        message: String,
        retry_after_secs: u64,
    },
    /// No account can serve at all (none configured, all disabled or needing re-authentication).
    #[error("{0}")]
    NoAccount(String),
    /// The store is unreachable or failed; `retry_after_secs` when a retry soon may help.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_secs: Option<u64>,
    },
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream did not answer within the read timeout")]
    UpstreamTimeout,
    #[error("internal error: {0}")]
    Internal(String),
}

/// The API a client speaks, which decides the shape of the errors the gateway writes to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Anthropic,
    OpenAi,
}

impl Dialect {
    /// OpenAI routes (`/v1/chat/…` and OpenAI-only paths) speak OpenAI; `/v1/models` speaks OpenAI to clients that send
    /// no `anthropic-version` header (every Anthropic SDK sends one); everything else speaks Anthropic.
    pub fn of_request(path: &str, headers: &HeaderMap) -> Dialect {
        const OPENAI_ONLY: &[&str] = &[
            "/v1/chat/",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/responses",
        ];
        if OPENAI_ONLY.iter().any(|p| path.starts_with(p)) {
            return Dialect::OpenAi;
        }
        let models = path == "/v1/models" || path.starts_with("/v1/models/");
        if models && !headers.contains_key("anthropic-version") {
            Dialect::OpenAi
        } else {
            Dialect::Anthropic
        }
    }
}

/// The OpenAI `error.type` and `error.code` for an Anthropic error type. One mapping for the gateway's own errors and
/// upstream ones, so a client sees the same shape for the same failure whoever detected it. A code with no OpenAI
/// equivalent carries the Anthropic type, which keeps the detail.
pub fn openai_kind(status: StatusCode, anthropic_type: &str) -> (&'static str, Option<&str>) {
    match anthropic_type {
        "invalid_request_error" => ("invalid_request_error", None),
        "request_too_large" => ("invalid_request_error", Some("request_too_large")),
        "authentication_error" => ("authentication_error", Some("invalid_api_key")),
        "permission_error" => ("permission_error", None),
        "not_found_error" => ("not_found_error", None),
        "rate_limit_error" => ("rate_limit_error", Some("rate_limit_exceeded")),
        "api_error" => ("server_error", None),
        other if status.is_client_error() => ("invalid_request_error", Some(other)),
        other => ("server_error", Some(other)),
    }
}

/// The OpenAI error body `{"error":{"message","type","param","code"}}`.
pub fn openai_error_body(
    message: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

impl GatewayError {
    pub fn fault(&self) -> Fault {
        match self {
            GatewayError::Unauthorized(_)
            | GatewayError::InvalidRequest(_)
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::NotFound(_)
            | GatewayError::Forbidden(_)
            | GatewayError::KeyLimit { .. }
            | GatewayError::BodyTimeout(_)
            | GatewayError::Conflict(_) => Fault::Client,
            GatewayError::UpstreamUnreachable(_) | GatewayError::UpstreamTimeout => Fault::Upstream,
            GatewayError::RateLimited { .. }
            | GatewayError::NoAccount(_)
            | GatewayError::Unavailable { .. }
            | GatewayError::Internal(_) => Fault::Gateway,
        }
    }

    /// Whether the same request may succeed if the client retries it later.
    pub fn retryable(&self) -> bool {
        match self {
            GatewayError::RateLimited { .. }
            | GatewayError::Unavailable { .. }
            | GatewayError::UpstreamUnreachable(_)
            | GatewayError::UpstreamTimeout
            | GatewayError::BodyTimeout(_) => true,
            // Waiting helps for a minute's or a slot's limit; a day's or a month's is not worth an SDK's retries.
            GatewayError::KeyLimit {
                retry_after_secs, ..
            } => *retry_after_secs <= 60,
            GatewayError::Unauthorized(_)
            | GatewayError::InvalidRequest(_)
            | GatewayError::BodyTooLarge { .. }
            | GatewayError::Forbidden(_)
            | GatewayError::NotFound(_)
            | GatewayError::Conflict(_)
            | GatewayError::NoAccount(_)
            | GatewayError::Internal(_) => false,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::Forbidden(_) => StatusCode::FORBIDDEN,
            GatewayError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
            GatewayError::Conflict(_) => StatusCode::CONFLICT,
            GatewayError::RateLimited { .. } | GatewayError::KeyLimit { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            GatewayError::NoAccount(_) | GatewayError::Unavailable { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::UpstreamUnreachable(_) => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The Anthropic `error.type` for this error.
    pub fn anthropic_type(&self) -> &'static str {
        match self {
            GatewayError::Unauthorized(_) => "authentication_error",
            GatewayError::InvalidRequest(_) | GatewayError::BodyTimeout(_) => {
                "invalid_request_error"
            }
            GatewayError::BodyTooLarge { .. } => "request_too_large",
            GatewayError::Forbidden(_) => "permission_error",
            GatewayError::NotFound(_) => "not_found_error",
            GatewayError::Conflict(_) => "invalid_request_error",
            GatewayError::RateLimited { .. } | GatewayError::KeyLimit { .. } => "rate_limit_error",
            GatewayError::UpstreamTimeout => "timeout_error",
            GatewayError::NoAccount(_)
            | GatewayError::Unavailable { .. }
            | GatewayError::UpstreamUnreachable(_)
            | GatewayError::Internal(_) => "api_error",
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::RateLimited {
                retry_after_secs, ..
            }
            | GatewayError::KeyLimit {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            GatewayError::Unavailable {
                retry_after_secs, ..
            } => *retry_after_secs,
            _ => None,
        }
    }

    /// The Anthropic error body `{"type":"error","error":{"type","message"}}`.
    pub fn anthropic_body(&self) -> serde_json::Value {
        serde_json::json!({"type": "error", "error": {"type": self.anthropic_type(), "message": self.to_string()}})
    }

    /// The OpenAI error body for this error (see [`openai_kind`]).
    pub fn openai_body(&self) -> serde_json::Value {
        let (kind, code) = openai_kind(self.status(), self.anthropic_type());
        openai_error_body(&self.to_string(), kind, None, code)
    }

    /// The response in the OpenAI dialect: same status and headers as [`IntoResponse`], OpenAI body.
    pub fn into_openai_response(self) -> Response {
        let body = self.openai_body();
        self.respond(body)
    }

    pub fn into_dialect_response(self, dialect: Dialect) -> Response {
        match dialect {
            Dialect::Anthropic => self.into_response(),
            Dialect::OpenAi => self.into_openai_response(),
        }
    }

    fn respond(self, body: serde_json::Value) -> Response {
        match self.fault() {
            Fault::Client => tracing::debug!(error = %self, "client error"),
            Fault::Upstream | Fault::Gateway => {
                tracing::warn!(error = %self, status = self.status().as_u16(), "request failed")
            }
        }
        let mut response = (self.status(), axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert("retry-after", v);
            }
        }
        mark_own(response.headers_mut(), self.retryable());
        if let GatewayError::KeyLimit { limit, .. } = &self {
            // Which of the key's limits refused it, for scripts (the message says it for people).
            response
                .headers_mut()
                .insert("x-gateway-key-limit", HeaderValue::from_static(limit));
        }
        response
    }

    /// A failed upstream call (no answer, or a body that stopped): a connect or read timeout, or an unreachable
    /// upstream with its root cause (`crate::upstream` never puts the URL in it).
    pub fn from_upstream(e: &crate::upstream::UpstreamError) -> GatewayError {
        use crate::upstream::UpstreamError;
        match e {
            UpstreamError::Timeout => GatewayError::UpstreamTimeout,
            UpstreamError::Failed(cause) | UpstreamError::NotProcessed(cause) => {
                GatewayError::UpstreamUnreachable(cause.clone())
            }
        }
    }

    /// A store failure as the admin API answers it: a missing object is 404, a taken name or a concurrent write 409,
    /// an unreachable or broken store 503.
    pub fn from_store(e: &crate::store::StoreError) -> GatewayError {
        use crate::store::StoreError;
        match e {
            StoreError::NotFound(_) | StoreError::KeyNotFound(_) => {
                GatewayError::NotFound(e.to_string())
            }
            StoreError::Conflict { .. }
            | StoreError::DuplicateName(_)
            | StoreError::DuplicateKey(_)
            | StoreError::Fenced(_) => GatewayError::Conflict(e.to_string()),
            StoreError::Unavailable(_) | StoreError::Corrupt(_) | StoreError::Key(_) => {
                GatewayError::Unavailable {
                    message: e.to_string(),
                    retry_after_secs: Some(1),
                }
            }
        }
    }
}

/// Marks a response the gateway wrote itself (not relayed from upstream), with whether a retry may help
/// (`x-should-retry`, which the Anthropic and OpenAI SDKs honour).
pub fn mark_own(headers: &mut HeaderMap, retryable: bool) {
    headers.insert("x-gateway-error", HeaderValue::from_static("1"));
    headers.insert(
        "x-should-retry",
        HeaderValue::from_static(if retryable { "true" } else { "false" }),
    );
}

/// The `error.type` and `error.message` of an Anthropic error body `{"type":"error","error":{"type","message"}}`. The
/// one parser of upstream error bodies (HTTP answers and SSE `event: error` data alike).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnthropicError {
    pub kind: Option<String>,
    pub message: Option<String>,
}

impl AnthropicError {
    pub fn parse(body: &[u8]) -> AnthropicError {
        serde_json::from_slice::<serde_json::Value>(body)
            .map(|v| AnthropicError::of_value(&v))
            .unwrap_or_default()
    }

    pub fn of_value(v: &serde_json::Value) -> AnthropicError {
        let field = |p: &str| v.pointer(p).and_then(|t| t.as_str()).map(str::to_string);
        AnthropicError {
            kind: field("/error/type"),
            message: field("/error/message"),
        }
    }

    /// The `error.message` of an Anthropic error body, or a prefix of the body; never includes request secrets.
    pub fn message_of(body: &[u8]) -> String {
        AnthropicError::parse(body)
            .message
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
    }

    /// `error.type`, or `api_error` when the body says none.
    pub fn kind_or_api_error(&self) -> &str {
        self.kind.as_deref().unwrap_or("api_error")
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let body = self.anthropic_body();
        self.respond(body)
    }
}

pub use crate::chain::error_chain;
