//! Public configuration, fault and record types.

use std::time::Duration;

use bytes::Bytes;

/// Behaviour of a simulator instance.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Accept any credential (or none) on the API endpoints. For benchmarks.
    pub accept_any_key: bool,
    /// Number of `content_block_delta` text events in a stream.
    pub stream_events: usize,
    /// Delay between SSE events.
    pub event_delay: Duration,
    /// Delay before answering messages (non-stream, and before stream headers).
    pub latency: Duration,
    /// Delay of the OAuth token endpoint.
    pub token_latency: Duration,
    /// `expires_in` of the access tokens the token endpoint issues.
    pub access_token_ttl: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            accept_any_key: false,
            stream_events: 8,
            event_delay: Duration::ZERO,
            latency: Duration::ZERO,
            token_latency: Duration::ZERO,
            access_token_ttl: Duration::from_secs(8 * 3600),
        }
    }
}

/// An access token and the current refresh token of its family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenPair {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

/// One request to `/v1/messages*` or `/v1/models*`.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The query string, if any (e.g. `beta=true`).
    pub query: Option<String>,
    /// Header names are lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The `x-api-key` value, else the bearer token.
    pub credential: Option<String>,
    /// Status of the answer; 0 when no answer was given (connection dropped, or the
    /// client went away before the answer).
    pub status: u16,
    /// The response body bytes the simulator wrote, in order: the whole body of a JSON answer,
    /// or every SSE chunk sent so far (all of them once a stream has ended; a cut or stalled
    /// stream holds what was sent before the fault). Empty when no body was sent.
    pub response: Bytes,
}

impl RecordedRequest {
    /// First value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// One call to the OAuth token endpoint.
#[derive(Clone, Debug)]
pub struct TokenCall {
    pub grant_type: String,
    pub refresh_token: Option<String>,
    /// 0 when no answer was given.
    pub status: u16,
    /// `ok`, `invalid_grant`, `rate_limited`, `server_error`, `dropped`,
    /// `rotated_then_dropped`, `invalid_request`, `unsupported_grant_type`, `pending`
    /// (still being answered) or `abandoned` (client went away before the answer).
    pub outcome: String,
    /// When the call arrived, counted from the simulator's start.
    pub at: Duration,
}

/// A fault for the messages endpoint.
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    /// Only requests with this credential (`x-api-key` value or bearer token) take it; `None` = any.
    pub credential: Option<String>,
    /// How many requests it applies to.
    pub times: usize,
}

impl Fault {
    /// Applies once, to any credential.
    pub fn once(kind: FaultKind) -> Fault {
        Fault {
            kind,
            credential: None,
            times: 1,
        }
    }

    /// Applies `times` times, to requests with `credential` only.
    pub fn for_credential(kind: FaultKind, credential: &str, times: usize) -> Fault {
        Fault {
            kind,
            credential: Some(credential.to_string()),
            times,
        }
    }

    /// Applies `times` times, to any credential.
    pub fn times(kind: FaultKind, times: usize) -> Fault {
        Fault {
            kind,
            credential: None,
            times,
        }
    }
}

#[derive(Clone, Debug)]
pub enum FaultKind {
    /// 429 `rate_limit_error`, with optional `retry-after` / `retry-after-ms` and extra headers.
    RateLimited {
        retry_after: Option<String>,
        retry_after_ms: Option<u64>,
        headers: Vec<(String, String)>,
    },
    /// Any status with an Anthropic error body.
    Status {
        status: u16,
        error_type: String,
        message: String,
        headers: Vec<(String, String)>,
    },
    /// 529 `overloaded_error` "Overloaded".
    Overloaded,
    /// Wait this long before answering (headers), then answer normally.
    Slow(Duration),
    /// Stream: send N events, then end the body abruptly (no `message_stop`).
    /// Non-stream: send part of the JSON body, then end it abruptly.
    CutStream { after_events: usize },
    /// Stream: send N events, then an `event: error` overloaded_error, and end.
    /// Non-stream: a 529 overloaded_error.
    StreamError { after_events: usize },
    /// Stream: send N events, then hang forever.
    /// Non-stream: send the headers, then hang forever before the body.
    StallStream { after_events: usize },
    /// Close the TCP connection without any response.
    DropConnection,
    /// Wait this long, then apply the inner fault (e.g. a 401 that arrives after a concurrent refresh).
    Delayed(Duration, Box<FaultKind>),
}

/// A fault for the OAuth token endpoint (applies to the next call, whatever its grant type).
#[derive(Clone, Debug)]
pub enum TokenFault {
    /// 429 with optional `retry-after` / `retry-after-ms`.
    RateLimited {
        retry_after: Option<String>,
        retry_after_ms: Option<u64>,
    },
    /// 500.
    ServerError,
    /// Wait this long (on top of `token_latency`), then answer normally.
    Slow(Duration),
    /// Perform the grant (rotating the family), then drop the connection without an answer.
    RotateThenDrop,
    /// Drop the connection without an answer (nothing rotates).
    DropConnection,
    /// 400 invalid_grant (nothing rotates).
    InvalidGrant,
    /// Perform the grant (rotating the family) and answer 200, but with `expires_in` replaced by this JSON value
    /// (absurdly large, negative, a string…) and these extra headers (e.g. a huge `retry-after-ms`).
    Hostile {
        expires_in: serde_json::Value,
        headers: Vec<(String, String)>,
    },
    /// Perform the grant (rotating the family), then answer 200 with a body that is not a token response.
    RotateThenGarbage,
}
