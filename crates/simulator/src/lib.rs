//! An in-process simulator of the Anthropic API (Messages, models, Claude OAuth) for the
//! gateway's tests and benchmarks. See `/work/shared/reference/anthropic-wire.md` for the wire
//! format it follows.
//!
//! Refusals it models as Anthropic answers them: the CORS rule (a request carrying `Origin` without
//! `anthropic-dangerous-direct-browser-access: true` gets 401 `authentication_error` "CORS requests must set
//! 'anthropic-dangerous-direct-browser-access' header", checked before the credential), banned organizations
//! ([`Simulator::ban`]), beta flags an organization may not use ([`Simulator::forbid_beta`]), revoked OAuth tokens and
//! removed API keys. Not modelled: organizations whose settings forbid CORS even with the header, per-model access,
//! spend limits and credit balances (inject those with [`Fault`]s), and the `access-control-*` headers Anthropic sends
//! to browsers.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let sim = simulator::Simulator::start().await?;
//! sim.add_api_key("sk-ant-api03-test");
//! let base = sim.base_url(); // point the client here
//! # let _ = base; Ok(()) }
//! ```
//!
//! ## Scripted answers
//! A Messages answer echoes the last user message's text. Markers in the request script the rest:
//! - `sim_thinking` anywhere: a thinking block (streamed in pieces, then a `signature_delta`) comes first.
//! - `sim_tool_use` anywhere (or "use a tool" in the last user text when tools are given): a `tool_use` block for the
//!   first tool, `sim_tool_use:NAME` for the tool NAME; its input is `sim_tool_args={…}` from the last user text, else
//!   one value per schema property ("sim PROP" for strings, 42 for numbers), streamed as `input_json_delta` pieces.
//! - A last user message carrying `tool_result` blocks is answered in text (`Tool result received: …`, then `You said: …` for any text beside the results) and never calls
//!   a tool again, so a scripted tool loop ends after one call.
//! - `sim_max_tokens` anywhere: `stop_reason: "max_tokens"` and no tool call.
//!
//! Not modelled: real token counts (input is the body's length / 4), `max_tokens` enforcement, server tools (web
//! search), citations, redacted thinking, and any check that a thinking block sent back is the one that was signed.

// Handlers return `Result<_, Response>` for early answers; the size of `Response` is irrelevant here.
#![allow(clippy::result_large_err)]

mod ids;
mod messages;
mod oauth;
mod record;
mod respond;
mod server;
mod sse;
mod state;
mod types;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use types::{Fault, FaultKind, RecordedRequest, SimConfig, TokenCall, TokenFault, TokenPair};

use ids::random_alnum;
use state::Shared;

/// A running simulator. Dropping it shuts the server down (listener and every connection).
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Simulator {
    /// Listen on `127.0.0.1:0` with the default configuration.
    pub async fn start() -> std::io::Result<Simulator> {
        Self::start_with(SimConfig::default()).await
    }

    /// Listen on `127.0.0.1:0`.
    pub async fn start_with(cfg: SimConfig) -> std::io::Result<Simulator> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await
    }

    pub async fn bind(addr: SocketAddr, cfg: SimConfig) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(cfg));
        let task = tokio::spawn(server::serve(listener, server::router(shared.clone())));
        Ok(Simulator { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_url(&self) -> String {
        format!("{}/v1/oauth/token", self.base_url())
    }

    pub fn authorize_url(&self) -> String {
        format!("{}/oauth/authorize", self.base_url())
    }

    pub fn profile_url(&self) -> String {
        format!("{}/api/oauth/profile", self.base_url())
    }

    pub fn config(&self) -> &SimConfig {
        &self.shared.cfg
    }

    // ---- credentials ----

    pub fn add_api_key(&self, key: &str) {
        self.shared.lock().api_keys.insert(key.to_string());
    }

    /// Later calls with this API key get 401 authentication_error "invalid x-api-key".
    pub fn remove_api_key(&self, key: &str) {
        self.shared.lock().api_keys.remove(key);
    }

    /// Every later API call (messages, count_tokens, models) with `credential` gets `status` with this error type and
    /// message, whatever the request: how Anthropic answers for a banned or disabled organization, e.g. 403
    /// `permission_error` "OAuth authentication is currently not allowed for this organization." or 400
    /// `invalid_request_error` "This organization has been disabled.".
    pub fn ban(&self, credential: &str, status: u16, error_type: &str, message: &str) {
        self.shared.lock().bans.insert(
            credential.to_string(),
            (status, error_type.to_string(), message.to_string()),
        );
    }

    /// Requests carrying `flag` among their `anthropic-beta` values get 403 `permission_error`, whatever the
    /// credential: a feature the organization may not use. The wording is the simulator's own (Anthropic's varies by
    /// feature); the gateway must not depend on it.
    pub fn forbid_beta(&self, flag: &str) {
        self.shared.lock().forbidden_betas.insert(
            flag.to_string(),
            format!("Your organization does not have access to the beta feature '{flag}'."),
        );
    }

    /// Generate, register and return a new API key (`sk-ant-api03-sim-…`).
    pub fn new_api_key(&self) -> String {
        let key = format!("sk-ant-api03-sim-{}", random_alnum(48));
        self.add_api_key(&key);
        key
    }

    /// A new token family: an access token valid for `access_ttl` (0 = already expired) and its
    /// current refresh token.
    pub fn issue_oauth(&self, access_ttl: Duration) -> TokenPair {
        let mut st = self.shared.lock();
        let family = st.new_family("user:inference user:profile");
        st.issue_pair(family, access_ttl)
    }

    /// Make `token` a valid access token (own account, no refresh token), e.g. a setup token.
    pub fn add_access_token(&self, token: &str, ttl: Duration) {
        let mut st = self.shared.lock();
        let family = st.new_family("user:inference");
        st.insert_access(token, family, ttl);
    }

    /// Make `refresh_token` the current refresh token of a new family.
    pub fn add_refresh_token(&self, refresh_token: &str) {
        let mut st = self.shared.lock();
        let family = st.new_family("user:inference user:profile");
        st.set_refresh(family, refresh_token);
    }

    /// Later calls with this API key get 401 authentication_error, as after the key is deleted in the Console.
    pub fn revoke_api_key(&self, key: &str) {
        self.shared.lock().api_keys.remove(key);
    }

    /// Later messages calls with this access token get 401 authentication_error.
    pub fn revoke_access_token(&self, token: &str) {
        self.shared.lock().revoke(token);
    }

    /// The current refresh token of the family of any access or refresh token (dead ones too).
    pub fn current_refresh_token(&self, any_token_of_family: &str) -> Option<String> {
        let st = self.shared.lock();
        let family = st.family_of(any_token_of_family)?;
        st.families.get(&family)?.current_refresh.clone()
    }

    /// The account email of the family of any access or refresh token (`sim-user-N@example.com`).
    pub fn account_email(&self, any_token_of_family: &str) -> Option<String> {
        let st = self.shared.lock();
        let family = st.family_of(any_token_of_family)?;
        Some(st.families.get(&family)?.email.clone())
    }

    // ---- faults ----

    /// Queue a fault for `/v1/messages`: each request takes (one use of) the first queued fault
    /// whose credential matches.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.push_fault(fault);
    }

    /// Queue a fault for the token endpoint: each call takes the first one.
    pub fn push_token_fault(&self, fault: TokenFault) {
        self.shared.push_token_fault(fault);
    }

    /// For `period` from now, answer every token-endpoint call with 429 and this `retry-after` (what the real
    /// endpoint does when it rate-limits the caller: the limit is the client's and address's, not one account's).
    /// Not modelled: the real endpoint's threshold and window are not published, so the simulator never starts
    /// rate limiting on its own; a test decides when it does.
    pub fn rate_limit_token_endpoint(&self, period: Duration, retry_after: Option<&str>) {
        self.shared
            .rate_limit_token_endpoint(period, retry_after.map(str::to_string));
    }

    /// Time since the simulator started, the clock of [`TokenCall::at`].
    pub fn elapsed(&self) -> Duration {
        self.shared.elapsed()
    }

    /// Extra headers on every messages response for `credential` (they override the defaults).
    pub fn set_ratelimit_headers(&self, credential: &str, headers: Vec<(String, String)>) {
        self.shared
            .lock()
            .ratelimit_headers
            .insert(credential.to_string(), headers);
    }

    // ---- records ----

    /// Record requests (default on). Benchmarks may turn it off to keep memory flat.
    pub fn set_recording(&self, on: bool) {
        self.shared.set_recording(on);
    }

    /// Every request to `/v1/messages*` and `/v1/models*`, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    pub fn token_calls(&self) -> Vec<TokenCall> {
        self.shared.token_calls()
    }

    pub fn token_call_count(&self) -> usize {
        self.shared.token_call_count()
    }

    /// Responses (streams or slow answers) the client abandoned before their end.
    pub fn disconnects(&self) -> usize {
        self.shared.disconnects()
    }

    /// True when `disconnects() >= n` within `timeout`.
    pub async fn wait_for_disconnects(&self, n: usize, timeout: Duration) -> bool {
        self.shared.wait_for_disconnects(n, timeout).await
    }

    /// Messages requests currently being answered (streams until their end).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Forget recorded requests, token calls and the disconnect count.
    pub fn reset_records(&self) {
        self.shared.reset_records();
    }
}
