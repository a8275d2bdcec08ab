//! Forwarding client requests to the upstream Messages API through the pool, with failover before the first byte.
//!
//! Invariant: nothing is retried after the first byte of a response reached the client. Streams are held until the
//! upstream's `message_start`, so an early 429/529 or `event: error` still fails over.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::account::{AccountId, AccountKind};
use crate::config::PoolConfig;
use crate::error::GatewayError;
use crate::pool::{jittered, Lease, Pool};
use crate::refresh::RefreshError;
use crate::relay::{Opened, Relay};

#[derive(Debug, Clone)]
pub struct Proxy {
    http: reqwest::Client,
    base_url: String,
    pool: Arc<Pool>,
    settings: PoolConfig,
}

/// The few body fields routing needs; everything else is forwarded as bytes, never re-serialized.
#[derive(Debug, Deserialize)]
struct Routing {
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    messages: Option<Vec<IgnoredAny>>,
}

/// What the client asked for, after validation.
#[derive(Debug)]
pub struct Forward {
    pub method: Method,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub model: Option<String>,
    pub stream: bool,
}

impl Forward {
    /// Validates a Messages-API body (`model` and non-empty `messages` required) and reads routing fields.
    pub fn messages(
        path_and_query: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Forward, GatewayError> {
        let routing: Routing = serde_json::from_slice(&body).map_err(|e| {
            GatewayError::InvalidRequest(format!("request body is not valid JSON: {e}"))
        })?;
        let model = routing
            .model
            .filter(|m| !m.is_empty())
            .ok_or_else(|| GatewayError::InvalidRequest("model: field required".into()))?;
        match routing.messages {
            Some(m) if !m.is_empty() => {}
            Some(_) => {
                return Err(GatewayError::InvalidRequest(
                    "messages: at least one message is required".into(),
                ))
            }
            None => {
                return Err(GatewayError::InvalidRequest(
                    "messages: field required".into(),
                ))
            }
        }
        Ok(Forward {
            method: Method::POST,
            path_and_query,
            headers,
            body,
            model: Some(model),
            stream: routing.stream.unwrap_or(false),
        })
    }
}

/// How one upstream attempt ended, when it did not produce the client's response.
enum Attempt {
    Done(Response),
    /// Try another account; `fallback` is what the client gets if none is left.
    Failover(Response),
    /// Use the same account again with a replaced credential (after a 401).
    RetrySame,
}

impl Proxy {
    pub fn new(
        http: reqwest::Client,
        base_url: String,
        pool: Arc<Pool>,
        settings: PoolConfig,
    ) -> Self {
        Proxy {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            pool,
            settings,
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Serves one client request: choose an account, get a valid credential, send, and fail over on upstream
    /// failures until `max_attempts` upstream calls were made.
    pub async fn forward(&self, req: Forward) -> Response {
        let mut tried: Vec<AccountId> = Vec::new();
        let mut attempts = 0u32;
        let mut last_failure: Option<Response> = None;
        let model = req.model.as_deref();
        loop {
            let lease = match self.pool.select(model, &tried) {
                Ok(lease) => lease,
                Err(e) => return last_failure.unwrap_or_else(|| e.into_response()),
            };
            tried.push(lease.entry.id);
            let mut replaced = false;
            let outcome = loop {
                let account = match self.pool.engine().credential(&lease.entry.cell).await {
                    Ok(a) => a,
                    Err(e) => break Err(e),
                };
                attempts += 1;
                match self
                    .attempt(
                        &req,
                        &lease,
                        &account.credential.secret,
                        account.kind,
                        replaced,
                    )
                    .await
                {
                    Attempt::RetrySame if !replaced => {
                        replaced = true;
                        match self
                            .pool
                            .engine()
                            .replace_rejected(&lease.entry.cell, &account.credential.secret)
                            .await
                        {
                            Ok(_) => continue,
                            Err(e) => break Err(e),
                        }
                    }
                    Attempt::RetrySame => {
                        break Ok(Attempt::Failover(
                            GatewayError::Internal("retry loop".into()).into_response(),
                        ))
                    }
                    other => break Ok(other),
                }
            };
            match outcome {
                Ok(Attempt::Done(response)) => return response,
                Ok(Attempt::Failover(response)) => {
                    last_failure = Some(response);
                    if attempts >= self.settings.max_attempts {
                        return last_failure.unwrap_or_else(|| {
                            GatewayError::Internal("no response".into()).into_response()
                        });
                    }
                }
                Ok(Attempt::RetrySame) => {}
                Err(refresh) => {
                    // The credential cannot be had now; the pool will not offer this account again for this request.
                    tracing::info!(account = lease.entry.id, error = %refresh, "account skipped");
                    if let RefreshError::Store(m) = &refresh {
                        last_failure.get_or_insert_with(|| {
                            GatewayError::Unavailable {
                                message: format!("the credential store is unreachable and this account needs a token refresh: {m}"),
                                retry_after_secs: Some(5),
                            }
                            .into_response()
                        });
                    }
                }
            }
        }
    }

    async fn attempt(
        &self,
        req: &Forward,
        lease: &Lease,
        secret: &str,
        kind: AccountKind,
        replaced: bool,
    ) -> Attempt {
        let entry = &lease.entry;
        let account = entry.cell.account();
        let mut headers = crate::headers::upstream_request(&req.headers, &account);
        // The cell may have moved on since `account` was read; send exactly the secret we were handed.
        if account.credential.secret != secret {
            let mut a = (*account).clone();
            a.credential.secret = secret.to_string();
            headers = crate::headers::upstream_request(&req.headers, &a);
        }
        let url = format!("{}{}", self.base_url, req.path_and_query);
        let mut builder = self.http.request(req.method.clone(), url).headers(headers);
        if req.method == Method::POST {
            builder = builder.body(req.body.clone());
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                let cooldown = jittered(crate::clock::secs(self.settings.overload_cooldown_secs));
                entry.cool_account(
                    tokio::time::Instant::now() + cooldown,
                    "upstream unreachable".into(),
                );
                metrics::counter!("gateway_upstream_attempts_total", "outcome" => "error")
                    .increment(1);
                let err = if e.is_timeout() {
                    GatewayError::UpstreamTimeout
                } else {
                    GatewayError::UpstreamUnreachable(error_chain(&e))
                };
                return Attempt::Failover(err.into_response());
            }
        };
        let status = response.status();
        if let Some(limits) = crate::ratelimit::unified(response.headers()) {
            entry.set_limits(limits);
        }
        metrics::counter!("gateway_upstream_attempts_total", "outcome" => status.as_u16().to_string()).increment(1);
        if status.is_success() {
            entry.record_success();
            let headers = crate::headers::client_response(response.headers());
            let is_sse = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            if req.stream && is_sse {
                let lease = Lease::clone_for(lease);
                return match Relay::open(response, lease, account.name.clone()).await {
                    Opened::Started(relay) => {
                        Attempt::Done(stream_response(status, headers, relay))
                    }
                    Opened::Failed { relay, error } => {
                        tracing::warn!(account = %account.name, error, "stream failed before message_start");
                        let cooldown =
                            jittered(crate::clock::secs(self.settings.overload_cooldown_secs));
                        entry.cool_account(
                            tokio::time::Instant::now() + cooldown,
                            format!("stream error {error}"),
                        );
                        Attempt::Failover(stream_response(status, headers, relay))
                    }
                };
            }
            let mut out = Response::builder().status(status);
            if let Some(h) = out.headers_mut() {
                *h = headers;
            }
            let body = Body::from_stream(response.bytes_stream());
            return Attempt::Done(
                out.body(body)
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
            );
        }
        // An error answer: small, so read it whole to classify it and to replay it if no other account can serve.
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap_or_default();
        let passthrough = error_response(status, &headers, body.clone());
        let now = tokio::time::Instant::now();
        match status.as_u16() {
            401 if kind == AccountKind::Oauth && !replaced => Attempt::RetrySame,
            401 | 403 => {
                let reason = format!(
                    "upstream answered {}: {}",
                    status.as_u16(),
                    upstream_message(&body)
                );
                self.pool.engine().mark_rejected(&entry.cell, reason);
                Attempt::Failover(passthrough)
            }
            429 => {
                let retry_after = crate::ratelimit::retry_after(&headers, self.pool.engine().now());
                let unified = crate::ratelimit::unified(&headers);
                let account_until = unified.as_ref().and_then(|u| u.account_rejected_until());
                if let Some(reset) = account_until {
                    let wait = (reset - self.pool.engine().now())
                        .to_std()
                        .unwrap_or_default()
                        .max(retry_after.unwrap_or_default());
                    entry.cool_account(now + wait, "subscription window rejected".into());
                } else {
                    let wait = retry_after.unwrap_or_else(|| {
                        crate::backoff::Backoff::new(
                            crate::clock::secs(self.settings.rate_limit_backoff_base_secs),
                            crate::clock::secs(self.settings.max_cooldown_secs),
                        )
                        .delay(entry.strikes() + 1)
                    });
                    match req.model.as_deref() {
                        Some(m) => entry.cool_model(m, now + wait),
                        None => entry.cool_account(now + wait, "rate limited".into()),
                    }
                }
                Attempt::Failover(passthrough)
            }
            500..=599 => {
                let cooldown = jittered(crate::clock::secs(self.settings.overload_cooldown_secs));
                entry.cool_account(
                    now + cooldown,
                    format!("upstream answered {}", status.as_u16()),
                );
                Attempt::Failover(passthrough)
            }
            _ => Attempt::Done(passthrough),
        }
    }
}

fn stream_response(status: reqwest::StatusCode, mut headers: HeaderMap, relay: Relay) -> Response {
    headers.insert(
        "cache-control",
        axum::http::HeaderValue::from_static("no-cache"),
    );
    headers.insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    let mut out = Response::new(Body::from_stream(relay));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

fn error_response(status: reqwest::StatusCode, headers: &HeaderMap, body: Bytes) -> Response {
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    *out.headers_mut() = crate::headers::client_response(headers);
    out
}

/// The `error.message` of an Anthropic error body, or a prefix of the body; never includes request secrets.
fn upstream_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}
