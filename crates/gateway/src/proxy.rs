//! Forwarding client requests to the upstream Messages API through the pool, with failover before the first byte.
//!
//! Invariant: nothing is retried after the first byte of a response reached the client. Streams are held until the
//! upstream's `message_start`, so an early 429/529 or `event: error` still fails over.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::Instant;

use crate::account::{Account, AccountId, AccountKind};
use crate::attribution::Attribution;
use crate::config::PoolConfig;
use crate::error::GatewayError;
use crate::pool::{jittered, secret_id, AccountEntry, Criteria, Pool, Slot, Verdict};
use crate::refresh::RefreshError;
use crate::relay::{Opened, Relay};
use crate::tenants::Tenant;
use crate::upstream::{Body as UpstreamBody, Response as UpstreamResponse, UpstreamError};
use crate::usage::{Meter, MeterSpec, UsageLog};

mod routing;

#[derive(Debug, Clone)]
pub struct Proxy {
    upstream: Upstream,
    /// `upstream.base_url`, parsed once; each request's URI is it with the client's path and query.
    base: crate::upstream::Base,
    pool: Arc<Pool>,
    policy: FailoverPolicy,
    attribution: Attribution,
    usage: Arc<UsageLog>,
    metrics: Arc<crate::request_metrics::RequestMetrics>,
}

/// The upstream HTTP clients of the request path (`crate::upstream`): one per connection worker, so that a request's
/// upstream connection is driven by the thread that serves its client (`crate::listener::workers`), and one for every
/// other thread; and the reqwest client of the credential checks (not hot).
#[derive(Debug, Clone)]
pub struct Upstream {
    checks: reqwest::Client,
    shared: crate::upstream::Client,
    workers: Arc<[crate::upstream::Client]>,
}

impl Upstream {
    pub fn new(
        checks: reqwest::Client,
        shared: crate::upstream::Client,
        workers: Vec<crate::upstream::Client>,
    ) -> Upstream {
        Upstream {
            checks,
            shared,
            workers: workers.into(),
        }
    }

    /// The client of the thread calling: its worker's, or the shared one.
    fn client(&self) -> &crate::upstream::Client {
        crate::listener::workers::current()
            .and_then(|i| self.workers.get(i))
            .unwrap_or(&self.shared)
    }
}

/// How far a request fails over and how long the failures it meets cool an account, as durations (from `[pool]`).
#[derive(Debug, Clone)]
struct FailoverPolicy {
    max_attempts: u32,
    deadline: std::time::Duration,
    overload_cooldown: std::time::Duration,
    attention_cooldown: std::time::Duration,
    rate_limit_backoff: crate::backoff::Backoff,
}

impl From<&PoolConfig> for FailoverPolicy {
    fn from(c: &PoolConfig) -> Self {
        FailoverPolicy {
            max_attempts: c.max_attempts,
            deadline: crate::clock::secs(c.failover_deadline_secs),
            overload_cooldown: crate::clock::secs(c.overload_cooldown_secs),
            attention_cooldown: crate::clock::secs(c.attention_cooldown_secs),
            rate_limit_backoff: crate::backoff::Backoff::new(
                crate::clock::secs(c.rate_limit_backoff_base_secs),
                crate::clock::secs(c.max_cooldown_secs),
            ),
        }
    }
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
    /// The conversation this request belongs to, for prompt-cache affinity.
    pub affinity: Option<u64>,
    /// Who sent it (the client-auth middleware's finding); its key's limits apply.
    pub tenant: Tenant,
    /// The route the client called, for usage records (`/v1/messages`, `/v1/chat/completions`, …).
    pub route: &'static str,
}

impl Forward {
    #[cfg(test)]
    /// Validates a Messages-API body (`model` and non-empty `messages` required) and reads routing fields.
    pub fn messages(
        path_and_query: String,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Forward, GatewayError> {
        Self::messages_with_sessions(path_and_query, headers, body, &[])
    }

    /// As [`Forward::messages`], reading the conversation id from the first of `session_headers` present.
    pub fn messages_with_sessions(
        path_and_query: String,
        headers: HeaderMap,
        body: Bytes,
        session_headers: &[String],
    ) -> Result<Forward, GatewayError> {
        let routing = routing::Routing::read(&body).map_err(|e| {
            GatewayError::InvalidRequest(format!("request body is not valid JSON: {e}"))
        })?;
        let model = routing
            .model
            .filter(|m| !m.is_empty())
            .ok_or_else(|| GatewayError::InvalidRequest("model: field required".into()))?
            .into_owned();
        let first = match &routing.messages {
            Some(m) if m.len > 0 => m.first,
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
        };
        let session = session_headers
            .iter()
            .find_map(|h| headers.get(h.as_str()).and_then(|v| v.to_str().ok()));
        let prefix = [routing.system, routing.tools, first];
        let user_id = routing.user_id.as_deref();
        let affinity = crate::affinity::conversation_key(session, user_id, &prefix);
        Ok(Forward {
            method: Method::POST,
            path_and_query,
            headers,
            body: body.clone(),
            model: Some(model),
            stream: routing.stream.unwrap_or(false),
            affinity,
            tenant: Tenant::Open,
            route: "/v1/messages",
        })
    }

    /// The tenant from the request's extensions (set by `auth::client_auth`) and the route called.
    pub fn with_client(
        mut self,
        extensions: &axum::http::Extensions,
        route: &'static str,
    ) -> Forward {
        if let Some(t) = extensions.get::<Tenant>() {
            self.tenant = t.clone();
        }
        self.route = route;
        self
    }
}

/// How one upstream attempt ended, when it did not produce the client's response.
enum Attempt {
    Done(Response),
    /// Try another account; the response is what the client gets if none is left.
    Failover(Response),
    /// Upstream refused (401/403, or a ban message): whose fault it is decides what happens (`crate::attribution`).
    Refused(Refused),
}

/// An upstream refusal, before it is attributed.
struct Refused {
    /// Upstream's answer as the client would get it.
    response: Response,
    status: u16,
    message: String,
}

impl Proxy {
    pub fn new(
        upstream: Upstream,
        base_url: String,
        pool: Arc<Pool>,
        settings: &PoolConfig,
        usage: Arc<UsageLog>,
    ) -> Self {
        let base = crate::upstream::Base::new(&base_url);
        let attribution = Attribution::new(
            upstream.checks.clone(),
            base.as_str(),
            crate::clock::secs(settings.credential_check_interval_secs),
            pool.engine().tasks().clone(),
        );
        Proxy {
            upstream,
            base,
            pool,
            policy: FailoverPolicy::from(settings),
            attribution,
            usage,
            metrics: Arc::default(),
        }
    }

    /// The per-request metric handles.
    pub fn metrics(&self) -> &crate::request_metrics::RequestMetrics {
        &self.metrics
    }

    pub fn usage(&self) -> &Arc<UsageLog> {
        &self.usage
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Serves one client request: check its key's limits (a refused request goes nowhere upstream), then choose an
    /// account, get a valid credential, send, and fail over on upstream failures until `max_attempts` upstream calls
    /// were made or the failover deadline passed. Every request leaves one usage record.
    pub async fn forward(&self, req: Forward) -> Response {
        let admission = match &req.tenant {
            Tenant::Managed(k) => match k.admit(req.model.as_deref(), self.usage.now()) {
                Ok(a) => Some(a),
                Err(e) => {
                    let meter = self.meter(&req, None);
                    meter.status(e.status().as_u16());
                    return fail(&meter, e);
                }
            },
            Tenant::Open | Tenant::Static => None,
        };
        let meter = self.meter(&req, admission);
        let response = self.forward_metered(req, &meter).await;
        meter.status(response.status().as_u16());
        response
    }

    fn meter(&self, req: &Forward, admission: Option<crate::tenants::ring::Admission>) -> Meter {
        Meter::new(
            Arc::clone(&self.usage),
            MeterSpec {
                tenant: req.tenant.clone(),
                route: req.route,
                model: req.model.clone(),
                stream: req.stream,
                admission,
            },
        )
    }

    async fn forward_metered(&self, req: Forward, meter: &Meter) -> Response {
        let started = Instant::now();
        let deadline = started + self.policy.deadline;
        let mut tried: Vec<AccountId> = Vec::new();
        let mut attempts = 0u32;
        let mut last_failure: Option<Response> = None;
        // When accounts were skipped because their refresh is backing off: the soonest moment one may serve again.
        let mut refresh_retry: Option<Instant> = None;
        // The first account whose refresh waits for its turn at the token endpoint: served (waiting) when no account
        // with a valid token serves.
        let mut queued = Queued::default();
        loop {
            let accounts = match &req.tenant {
                Tenant::Managed(k) => k.key().limits.accounts.clone(),
                Tenant::Open | Tenant::Static => Vec::new(),
            };
            let want = Criteria {
                model: req.model.as_deref(),
                affinity: req.affinity,
                exclude: &tried,
                accounts: &accounts,
            };
            let next = self.pool.acquire(want).await;
            let (slot, grace) = match next {
                Ok(slot) => {
                    let grace = queued.grace();
                    (slot, grace)
                }
                Err(e) => match queued.parked.take() {
                    Some(parked) => (parked, None),
                    None => {
                        if let Some(response) = last_failure {
                            return response;
                        }
                        let e = with_refresh_retry(e, refresh_retry);
                        return fail(meter, e);
                    }
                },
            };
            // Excluded from the next choice, if there is one (added then: most requests have no next choice, and
            // then `tried` never allocates).
            let id = slot.entry.id;
            let outcome = self
                .serve_on(&req, &slot, &mut attempts, meter, grace)
                .await;
            if !matches!(outcome, Ok(Attempt::Done(_) | Attempt::Refused(_)))
                && !tried.contains(&id)
            {
                tried.push(id);
            }
            match outcome {
                Err(RefreshError::Queued) => {
                    // Try accounts whose tokens are valid; this one's refresh runs on and is waited for if none is.
                    tried.extend(self.needing_refresh());
                    queued.parked = Some(slot);
                }
                Ok(Attempt::Done(response)) => return response,
                Ok(Attempt::Failover(response)) => {
                    last_failure = Some(response);
                    if attempts >= self.policy.max_attempts || Instant::now() >= deadline {
                        return last_failure.unwrap_or_else(|| {
                            GatewayError::Internal("no response".into()).into_response()
                        });
                    }
                }
                // serve_on attributes every refusal before it returns.
                Ok(Attempt::Refused(r)) => return r.response,
                Err(refresh) => {
                    // The credential cannot be had now; the pool will not offer this account again for this request.
                    tracing::info!(account = slot.entry.id, error = %refresh, "account skipped");
                    if let Some(t) = refresh.retry_at() {
                        refresh_retry = Some(refresh_retry.map_or(t, |r| r.min(t)));
                    }
                    if let RefreshError::Store(m) = &refresh {
                        // The most useful answer when nothing else serves: the store must come back first.
                        last_failure = Some(
                            GatewayError::Unavailable {
                                message: format!("the credential store is unreachable and an account needs a token refresh: {m}"),
                                retry_after_secs: Some(5),
                            }
                            .into_response(),
                        );
                    }
                }
            }
        }
    }
}

/// The pool had no account left: when accounts were skipped for a refresh that is backing off, say when to retry.
fn with_refresh_retry(e: GatewayError, refresh_retry: Option<Instant>) -> GatewayError {
    match (e, refresh_retry) {
        (GatewayError::RateLimited { message, retry_after_secs }, Some(t)) => GatewayError::RateLimited {
            message,
            retry_after_secs: retry_after_secs.min(crate::clock::retry_after_secs(t)),
        },
        (GatewayError::NoAccount(_), Some(t)) => GatewayError::RateLimited {
            message: "every account is waiting for its token refresh to be allowed again; retry after the time in retry-after".into(),
            retry_after_secs: crate::clock::retry_after_secs(t),
        },
        (e, _) => e,
    }
}

/// How long a request waits for the first refresh it needs before trying accounts whose tokens are valid.
const QUEUE_GRACE: Duration = Duration::from_millis(500);

/// The account one request passed over because its refresh waits for its turn at the token endpoint, kept (with
/// its slot) to be served, waiting, when no account with a valid token serves.
#[derive(Default)]
struct Queued {
    parked: Option<Slot>,
}

impl Queued {
    /// How long to wait for this account's refresh: a moment the first time; later accounts have valid tokens.
    fn grace(&self) -> Option<Duration> {
        self.parked.is_none().then_some(QUEUE_GRACE)
    }
}

impl Proxy {
    /// OAuth accounts whose token must be refreshed before a request can use it.
    fn needing_refresh(&self) -> Vec<AccountId> {
        let now = self.pool.engine().now();
        self.pool
            .entries()
            .iter()
            .filter(|e| {
                let a = e.cell.account();
                a.kind == AccountKind::Oauth && !e.cell.fresh_for_request(&a, now)
            })
            .map(|e| e.id)
            .collect()
    }

    /// Attempts on one account: again with a replaced credential when upstream refused one the cell no longer holds
    /// or an OAuth token it rejected (one forced refresh), and every refusal attributed before anything is done about
    /// it.
    /// `grace`: how long to wait for a refresh this account needs before leaving it to run and answering
    /// [`RefreshError::Queued`]; `None` waits up to `refresh_timeout_secs`.
    async fn serve_on(
        &self,
        req: &Forward,
        slot: &Slot,
        attempts: &mut u32,
        meter: &Meter,
        grace: Option<Duration>,
    ) -> Result<Attempt, RefreshError> {
        let entry = &slot.entry;
        let engine = self.pool.engine();
        let mut replaced = false;
        loop {
            let account = match grace.filter(|_| !replaced) {
                Some(g) => engine.credential_within(&entry.cell, g).await?,
                None => engine.credential(&entry.cell).await?,
            };
            let secret = &account.credential.secret;
            *attempts += 1;
            meter.attempt(entry.id, &account.name);
            let refused = match self.attempt(req, slot, secret, meter).await {
                Attempt::Refused(r) => r,
                other => return Ok(other),
            };
            if replaced {
                return Ok(self.attribute(entry, refused, None).await);
            }
            // A rejection is about the token sent: if a refresh or re-import replaced it meanwhile, try the new one.
            if entry.cell.account().credential.secret != *secret {
                replaced = true;
                continue;
            }
            let refresh_may_help = refused.status == 401
                && account.kind == AccountKind::Oauth
                && !crate::attribution::is_ban(&refused.message)
                && !self.attribution.vouched(entry, secret);
            if !refresh_may_help {
                return Ok(self.attribute(entry, refused, None).await);
            }
            replaced = true;
            match engine.replace_rejected(&entry.cell, secret).await {
                Ok(_) => continue,
                Err(e) => match e.retry_at() {
                    // The refresh is backing off: the rejected token must not be re-sent on every request.
                    Some(until) => return Ok(self.attribute(entry, refused, Some(until)).await),
                    None => return Err(e),
                },
            }
        }
    }

    /// Decides whose fault a refusal is by checking the credential alone (see `crate::attribution`): the client's
    /// request (upstream's answer is relayed, nothing else happens), the credential (`needs_reauth`, or a cooldown
    /// until its refresh may run when that is what blocks it), the organization (`banned`), or unknown (relayed).
    async fn attribute(
        &self,
        entry: &Arc<AccountEntry>,
        refused: Refused,
        refresh_blocked_until: Option<Instant>,
    ) -> Attempt {
        let (account, checked) = self.attribution.check(entry).await;
        let current = checked.secret_id == secret_id(&account.credential.secret);
        let secret = &account.credential.secret;
        let engine = self.pool.engine();
        let blame = match (&checked.verdict, refresh_blocked_until) {
            (Verdict::Works, _) => "request",
            (Verdict::Unknown, None) => "unknown",
            // A verdict about a credential the cell no longer holds says nothing about the one it holds now.
            (_, _) if !current => "replaced",
            (Verdict::Unknown | Verdict::Rejected(_), Some(until)) => {
                self.pool.cool_account(
                    entry,
                    until,
                    format!(
                        "upstream answered {} and the token refresh is backing off",
                        refused.status
                    ),
                );
                "credential"
            }
            (Verdict::Rejected(reason), None) => {
                tracing::error!(account = %account.name, %reason, "credential rejected; account needs re-authentication");
                engine.mark_rejected(&entry.cell, secret, reason.clone());
                "credential"
            }
            (Verdict::Banned(message), _) => {
                tracing::error!(account = %account.name, %message, "Anthropic refuses the organization; account banned");
                engine.mark_banned(&entry.cell, secret, message.clone());
                "organization"
            }
        };
        metrics::counter!("gateway_refusals_total", "blame" => blame).increment(1);
        match blame {
            "request" | "unknown" => {
                tracing::info!(account = %account.name, status = refused.status, message = %refused.message, blame, "refusal relayed to the client; the account stays in service");
                Attempt::Done(refused.response)
            }
            _ => Attempt::Failover(refused.response),
        }
    }

    /// One upstream call with `secret` on the slot's account, and what happens next.
    async fn attempt(&self, req: &Forward, slot: &Slot, secret: &str, meter: &Meter) -> Attempt {
        let account = account_with_secret(&slot.entry, secret);
        let sent_at = Instant::now();
        let response = match self.send(req, &account).await {
            Ok(r) => r,
            Err(e) => return self.on_unreachable(&slot.entry, &account, &e, sent_at, meter),
        };
        let status = response.status();
        if let Some(limits) = crate::ratelimit::limits(response.headers()) {
            slot.entry.set_limits(limits);
        }
        self.metrics.attempt(status.as_u16());
        if !status.is_success() {
            return self.on_error(req, slot, response, sent_at, meter).await;
        }
        if req.stream && is_event_stream(response.headers()) {
            return self.open_stream(slot, &account, response, meter).await;
        }
        self.pool.record_success(&slot.entry, slot.probe);
        meter.first_byte();
        relay_answer(slot, response, meter).await
    }

    async fn send(
        &self,
        req: &Forward,
        account: &Account,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let uri = self.base.uri(&req.path_and_query)?;
        let headers = || crate::headers::upstream_request(&req.headers, account);
        let body = if req.method == Method::POST {
            req.body.clone()
        } else {
            Bytes::new()
        };
        self.upstream
            .client()
            .send(&req.method, &uri, headers, &body)
            .await
    }

    /// No answer at all (connect error, timeout): the account cools briefly and another one is tried.
    fn on_unreachable(
        &self,
        entry: &Arc<AccountEntry>,
        account: &Account,
        e: &UpstreamError,
        sent_at: Instant,
        meter: &Meter,
    ) -> Attempt {
        // This replica's own path to upstream failed: the other replicas may well reach it.
        self.pool.cool_account_here(
            entry,
            sent_at + self.overload_cooldown(),
            "upstream unreachable from this replica".into(),
        );
        metrics::counter!("gateway_upstream_attempts_total", "outcome" => "error").increment(1);
        let err = GatewayError::from_upstream(e);
        tracing::warn!(account = %account.name, error = %err, "upstream attempt failed");
        Attempt::Failover(fail(meter, err))
    }

    /// A 2xx event stream: held until the upstream's `message_start`, so an early `event: error` can still fail over.
    async fn open_stream(
        &self,
        slot: &Slot,
        account: &Account,
        response: UpstreamResponse,
        meter: &Meter,
    ) -> Attempt {
        let status = response.status();
        let (head, body) = response.into_parts();
        let headers = crate::headers::client_response(head.headers);
        match Relay::open(body, Slot::clone_for(slot), account.name.clone()).await {
            Opened::Started(mut relay) => {
                relay.meter(meter.clone());
                self.pool.record_success(&slot.entry, slot.probe);
                Attempt::Done(stream_response(status, headers, relay))
            }
            Opened::Failed { relay, error } => {
                tracing::warn!(account = %account.name, error, "stream failed before message_start");
                self.pool.cool_account(
                    &slot.entry,
                    Instant::now() + self.overload_cooldown(),
                    format!("stream error {error}"),
                );
                Attempt::Failover(stream_response(status, headers, relay))
            }
        }
    }

    /// An error answer: small, so read whole to classify it (README: "What happens when upstream says no") and to
    /// replay it if no other account can serve.
    async fn on_error(
        &self,
        req: &Forward,
        slot: &Slot,
        response: UpstreamResponse,
        sent_at: Instant,
        meter: &Meter,
    ) -> Attempt {
        let entry = &slot.entry;
        let (head, body) = response.into_parts();
        let status = head.status;
        let headers = head.headers;
        let body = read_capped(body, MAX_ERROR_BODY).await;
        let passthrough = error_response(status, &headers, body.clone());
        let message = crate::error::AnthropicError::message_of(&body);
        meter.error(crate::error::AnthropicError::parse(&body).kind_or_api_error());
        match status.as_u16() {
            s if crate::attribution::needs_attribution(s, &message) => Attempt::Refused(Refused {
                response: passthrough,
                status: s,
                message,
            }),
            429 => {
                self.cool_after_429(slot, req.model.as_deref(), &headers, &body, &message);
                Attempt::Failover(passthrough)
            }
            500..=599 => {
                self.pool.cool_account(
                    entry,
                    sent_at + self.overload_cooldown(),
                    format!("upstream answered {}", status.as_u16()),
                );
                Attempt::Failover(passthrough)
            }
            _ => Attempt::Done(passthrough),
        }
    }

    fn overload_cooldown(&self) -> std::time::Duration {
        jittered(self.policy.overload_cooldown)
    }

    /// Decides the scope and length of a 429's cooldown (README: "What happens when upstream says no").
    fn cool_after_429(
        &self,
        slot: &Slot,
        model: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        message: &str,
    ) {
        let entry = &slot.entry;
        let engine = self.pool.engine();
        let now = Instant::now();
        let retry_after = crate::ratelimit::retry_after(headers, engine.now());
        let limits = crate::ratelimit::limits(headers);
        // Bounded (`clock::MAX_WAIT`), like `retry_after`: `now + wait` below cannot overflow.
        let until_wall =
            |t: chrono::DateTime<chrono::Utc>| crate::clock::wait_until(engine.now(), t);
        if let Some(reset) = limits.as_ref().and_then(|l| l.account_rejected_until()) {
            let wait = until_wall(reset).max(retry_after.unwrap_or_default());
            tracing::warn!(
                account = entry.id,
                wait_secs = wait.as_secs(),
                "subscription window rejected; account cools"
            );
            self.pool.cool_account(
                entry,
                now + wait,
                "rate limited: subscription window exhausted".into(),
            );
            return;
        }
        let error_type = crate::error::AnthropicError::parse(body).kind;
        if retry_after.is_none() && not_a_rate_limit(error_type.as_deref(), message) {
            let reason = format!(
                "needs attention: upstream answered 429 that is not a rate limit: {message}"
            );
            tracing::error!(account = entry.id, %reason, "account needs attention");
            self.pool
                .cool_account(entry, now + self.policy.attention_cooldown, reason);
            return;
        }
        let model_reset = limits
            .as_ref()
            .and_then(|l| l.model_rejected_until())
            .map(until_wall);
        let wait = match (retry_after, model_reset) {
            (Some(r), Some(m)) => r.max(m),
            (Some(r), None) => r,
            (None, Some(m)) => m,
            (None, None) => self.policy.rate_limit_backoff.delay(entry.strikes() + 1),
        };
        match model {
            Some(m) => self.pool.cool_model(entry, m, now + wait),
            None => self
                .pool
                .cool_account(entry, now + wait, "rate limited".into()),
        }
    }
}

/// Records a gateway-written error in the request's meter and answers it (Anthropic dialect; the OpenAI route
/// reshapes it).
fn fail(meter: &Meter, e: GatewayError) -> Response {
    meter.error(e.anthropic_type());
    e.into_response()
}

/// A 429 that is about money, not rate: spend limits, exhausted credits, billing.
fn not_a_rate_limit(error_type: Option<&str>, message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    let about_money = [
        "credit",
        "spend",
        "billing",
        "balance",
        "usage limit",
        "quota",
    ]
    .iter()
    .any(|k| m.contains(k));
    about_money || error_type.is_some_and(|t| t != "rate_limit_error")
}

/// The account as handed out with `secret`: the cell may have moved on since, and exactly that secret is sent.
fn account_with_secret(entry: &AccountEntry, secret: &str) -> Arc<Account> {
    let account = entry.cell.account();
    if account.credential.secret == secret {
        return account;
    }
    let mut a = (*account).clone();
    a.credential.secret = secret.to_string();
    Arc::new(a)
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"))
}

/// A 2xx non-stream answer. One that arrives whole anyway (known small length) is read, its usage counted, and sent
/// with its length (one write, no chunked re-encoding); a larger or unsized one streams through a usage tap.
async fn relay_answer(slot: &Slot, response: UpstreamResponse, meter: &Meter) -> Attempt {
    let status = response.status();
    let (head, response) = response.into_parts();
    let headers = crate::headers::client_response(head.headers);
    let known_small = response
        .exact_len()
        .is_some_and(|n| n <= MAX_BUFFERED_ANSWER);
    let body = if known_small {
        match response.bytes().await {
            Ok(bytes) => {
                crate::relay::record_usage_of(&slot.entry, &bytes, Some(meter));
                Body::from(bytes)
            }
            Err(e) => return Attempt::Failover(fail(meter, GatewayError::from_upstream(&e))),
        }
    } else {
        Body::from_stream(crate::relay::UsageTap::new(
            response,
            Slot::clone_for(slot),
            Some(meter.clone()),
        ))
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Attempt::Done(out)
}

/// Largest non-stream answer read whole before relaying (larger or unsized ones are streamed through).
const MAX_BUFFERED_ANSWER: u64 = 4 * 1024 * 1024;

/// Largest upstream error body kept (error bodies are small; a huge one is cut, not buffered whole).
const MAX_ERROR_BODY: usize = 256 * 1024;

async fn read_capped(mut response: UpstreamBody, cap: usize) -> Bytes {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= cap {
            break;
        }
    }
    Bytes::from(out)
}

fn stream_response(status: StatusCode, mut headers: HeaderMap, relay: Relay) -> Response {
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

fn error_response(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Response {
    let mut out = Response::new(Body::from(body));
    *out.status_mut() = status;
    *out.headers_mut() = crate::headers::client_response(headers.clone());
    out
}
