//! Shared state: credentials, token families, faults, records, counters.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use tokio::sync::Notify;

use crate::ids::{random_alnum, random_uuid};
use crate::record::{lock_log, RecordingBody, ResponseLog};
use crate::respond::is_dropped;
use crate::types::{Fault, RecordedRequest, SimConfig, TokenCall, TokenFault, TokenPair};

pub(crate) const ACCESS_PREFIX: &str = "sk-ant-oat01-sim-";
pub(crate) const REFRESH_PREFIX: &str = "sk-ant-ort01-sim-";

fn concat(chunks: &[Bytes]) -> Bytes {
    match chunks {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut out = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
            for c in many {
                out.extend_from_slice(c);
            }
            out.freeze()
        }
    }
}

/// A recorded request and the log of its response body.
struct Record {
    seq: u64,
    request: RecordedRequest,
    response: ResponseLog,
}

pub(crate) struct AccessToken {
    expires_at: Option<Instant>,
    family: u64,
    revoked: bool,
}

/// A token family: one account, one current refresh token (if any).
pub(crate) struct Family {
    pub(crate) current_refresh: Option<String>,
    pub(crate) scope: String,
    pub(crate) account_uuid: String,
    pub(crate) email: String,
    pub(crate) org_uuid: String,
    pub(crate) org_name: String,
}

pub(crate) struct AuthCode {
    pub(crate) challenge: String,
    pub(crate) redirect_uri: String,
    pub(crate) scope: String,
}

pub(crate) enum AccessCheck {
    Valid(u64),
    Unknown,
    Expired,
    Revoked,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) api_keys: HashSet<String>,
    access: HashMap<String, AccessToken>,
    /// Every refresh token ever issued, dead or current, to its family.
    refresh: HashMap<String, u64>,
    pub(crate) families: HashMap<u64, Family>,
    next_family: u64,
    pub(crate) codes: HashMap<String, AuthCode>,
    faults: VecDeque<Fault>,
    token_faults: VecDeque<TokenFault>,
    pub(crate) ratelimit_headers: HashMap<String, Vec<(String, String)>>,
    /// Credentials whose organization refuses them permanently: (status, error type, message) on every API call.
    pub(crate) bans: HashMap<String, (u16, String, String)>,
    /// `anthropic-beta` flags no organization here may use: flag → message of the 403.
    pub(crate) forbidden_betas: HashMap<String, String>,
    requests: Vec<Record>,
    token_calls: Vec<(u64, TokenCall)>,
    pub(crate) request_counts: HashMap<String, u64>,
    /// Until then every token call is rate limited (the caller's limit, whatever the account), with this Retry-After.
    token_rate_limit: Option<(Instant, Option<String>)>,
}

impl State {
    pub(crate) fn new_family(&mut self, scope: &str) -> u64 {
        self.next_family += 1;
        let id = self.next_family;
        self.families.insert(
            id,
            Family {
                current_refresh: None,
                scope: scope.to_string(),
                account_uuid: random_uuid(),
                email: format!("sim-user-{id}@example.com"),
                org_uuid: random_uuid(),
                org_name: format!("Sim Org {id}"),
            },
        );
        id
    }

    pub(crate) fn insert_access(&mut self, token: &str, family: u64, ttl: Duration) {
        self.access.insert(
            token.to_string(),
            AccessToken {
                expires_at: Instant::now().checked_add(ttl),
                family,
                revoked: false,
            },
        );
    }

    pub(crate) fn issue_access(&mut self, family: u64, ttl: Duration) -> String {
        let token = format!("{ACCESS_PREFIX}{}", random_alnum(64));
        self.insert_access(&token, family, ttl);
        token
    }

    /// Make `token` the current refresh token of `family` (the previous one dies).
    pub(crate) fn set_refresh(&mut self, family: u64, token: &str) {
        self.refresh.insert(token.to_string(), family);
        if let Some(f) = self.families.get_mut(&family) {
            f.current_refresh = Some(token.to_string());
        }
    }

    pub(crate) fn rotate_refresh(&mut self, family: u64) -> String {
        let token = format!("{REFRESH_PREFIX}{}", random_alnum(64));
        self.set_refresh(family, &token);
        token
    }

    /// A fresh access token and a rotated refresh token for `family`.
    pub(crate) fn issue_pair(&mut self, family: u64, ttl: Duration) -> TokenPair {
        TokenPair {
            access_token: self.issue_access(family, ttl),
            refresh_token: self.rotate_refresh(family),
            expires_in: ttl.as_secs(),
        }
    }

    /// The family of a refresh token if it is the current one.
    pub(crate) fn live_refresh_family(&self, token: &str) -> Option<u64> {
        let family = *self.refresh.get(token)?;
        let f = self.families.get(&family)?;
        (f.current_refresh.as_deref() == Some(token)).then_some(family)
    }

    pub(crate) fn family_of(&self, token: &str) -> Option<u64> {
        self.access
            .get(token)
            .map(|a| a.family)
            .or_else(|| self.refresh.get(token).copied())
    }

    pub(crate) fn check_access(&self, token: &str) -> AccessCheck {
        match self.access.get(token) {
            None => AccessCheck::Unknown,
            Some(a) if a.revoked => AccessCheck::Revoked,
            Some(a) if a.expires_at.is_some_and(|t| Instant::now() >= t) => AccessCheck::Expired,
            Some(a) => AccessCheck::Valid(a.family),
        }
    }

    pub(crate) fn revoke(&mut self, token: &str) {
        if let Some(a) = self.access.get_mut(token) {
            a.revoked = true;
        }
    }
}

/// Everything the server tasks and the [`crate::Simulator`] handle share.
pub(crate) struct Shared {
    pub(crate) cfg: SimConfig,
    state: Mutex<State>,
    recording: AtomicBool,
    disconnects: AtomicUsize,
    disconnect_notify: Notify,
    in_flight: AtomicUsize,
    seq: AtomicU64,
    started: Instant,
}

impl Shared {
    pub(crate) fn new(cfg: SimConfig) -> Shared {
        Shared {
            cfg,
            state: Mutex::new(State::default()),
            recording: AtomicBool::new(true),
            disconnects: AtomicUsize::new(0),
            disconnect_notify: Notify::new(),
            in_flight: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_recording(&self, on: bool) {
        self.recording.store(on, Ordering::Relaxed);
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    // ---- faults ----

    pub(crate) fn push_fault(&self, fault: Fault) {
        if fault.times > 0 {
            self.lock().faults.push_back(fault);
        }
    }

    /// Take one use of the first queued fault matching `credential`.
    pub(crate) fn take_fault(&self, credential: Option<&str>) -> Option<Fault> {
        let mut st = self.lock();
        let idx = st
            .faults
            .iter()
            .position(|f| f.credential.is_none() || f.credential.as_deref() == credential)?;
        let f = st.faults.get_mut(idx)?;
        f.times = f.times.saturating_sub(1);
        let taken = f.clone();
        if f.times == 0 {
            st.faults.remove(idx);
        }
        Some(taken)
    }

    pub(crate) fn push_token_fault(&self, fault: TokenFault) {
        self.lock().token_faults.push_back(fault);
    }

    pub(crate) fn take_token_fault(&self) -> Option<TokenFault> {
        let mut st = self.lock();
        if let Some((until, retry_after)) = &st.token_rate_limit {
            if Instant::now() < *until {
                return Some(TokenFault::RateLimited {
                    retry_after: retry_after.clone(),
                    retry_after_ms: None,
                });
            }
            st.token_rate_limit = None;
        }
        st.token_faults.pop_front()
    }

    pub(crate) fn rate_limit_token_endpoint(&self, period: Duration, retry_after: Option<String>) {
        self.lock().token_rate_limit = Instant::now()
            .checked_add(period)
            .map(|until| (until, retry_after));
    }

    /// Time since the simulator started (the clock of [`TokenCall::at`]).
    pub(crate) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    // ---- records ----

    pub(crate) fn record_request(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        body: &Bytes,
        credential: Option<&str>,
    ) -> Option<u64> {
        if !self.recording.load(Ordering::Relaxed) {
            return None;
        }
        let seq = self.next_seq();
        let rec = RecordedRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().map(str::to_string),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.clone(),
            credential: credential.map(str::to_string),
            status: 0,
            response: Bytes::new(),
        };
        self.lock().requests.push(Record {
            seq,
            request: rec,
            response: ResponseLog::default(),
        });
        Some(seq)
    }

    /// Set the status of the record `seq` (if recorded) and make `resp`'s body append every
    /// chunk it sends to the record.
    pub(crate) fn finish_request(&self, seq: Option<u64>, resp: Response) -> Response {
        let Some(seq) = seq else { return resp };
        let status = if is_dropped(&resp) {
            0
        } else {
            resp.status().as_u16()
        };
        let log = {
            let mut st = self.lock();
            let Some(r) = st.requests.iter_mut().rev().find(|r| r.seq == seq) else {
                // Forgotten by `reset_records` meanwhile.
                return resp;
            };
            r.request.status = status;
            r.response.clone()
        };
        resp.map(|body| Body::new(RecordingBody::new(body, log)))
    }

    pub(crate) fn requests(&self) -> Vec<RecordedRequest> {
        self.lock()
            .requests
            .iter()
            .map(|r| RecordedRequest {
                response: concat(&lock_log(&r.response)),
                ..r.request.clone()
            })
            .collect()
    }

    pub(crate) fn begin_token_call(
        &self,
        grant_type: String,
        refresh_token: Option<String>,
    ) -> u64 {
        let seq = self.next_seq();
        let at = self.elapsed();
        self.lock().token_calls.push((
            seq,
            TokenCall {
                grant_type,
                refresh_token,
                status: 0,
                outcome: "pending".to_string(),
                at,
            },
        ));
        seq
    }

    pub(crate) fn finish_token_call(&self, seq: u64, status: u16, outcome: &str) {
        let mut st = self.lock();
        if let Some((_, c)) = st.token_calls.iter_mut().rev().find(|(s, _)| *s == seq) {
            c.status = status;
            c.outcome = outcome.to_string();
        }
    }

    pub(crate) fn token_calls(&self) -> Vec<TokenCall> {
        self.lock()
            .token_calls
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    pub(crate) fn token_call_count(&self) -> usize {
        self.lock().token_calls.len()
    }

    pub(crate) fn reset_records(&self) {
        let mut st = self.lock();
        st.requests.clear();
        st.token_calls.clear();
        drop(st);
        self.disconnects.store(0, Ordering::SeqCst);
    }

    // ---- counters ----

    pub(crate) fn disconnects(&self) -> usize {
        self.disconnects.load(Ordering::SeqCst)
    }

    pub(crate) async fn wait_for_disconnects(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.disconnect_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.disconnects() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.disconnects() >= n;
            }
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a disconnect when dropped before [`DisconnectGuard::done`].
pub(crate) struct DisconnectGuard {
    shared: Arc<Shared>,
    armed: bool,
}

impl DisconnectGuard {
    pub(crate) fn new(shared: &Arc<Shared>) -> DisconnectGuard {
        DisconnectGuard {
            shared: shared.clone(),
            armed: true,
        }
    }

    pub(crate) fn done(&mut self) {
        self.armed = false;
    }
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if self.armed {
            self.shared.disconnects.fetch_add(1, Ordering::SeqCst);
            self.shared.disconnect_notify.notify_waiters();
        }
    }
}

/// Counts a messages request as in flight while alive.
pub(crate) struct InFlightGuard {
    shared: Arc<Shared>,
}

impl InFlightGuard {
    pub(crate) fn new(shared: &Arc<Shared>) -> InFlightGuard {
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlightGuard {
            shared: shared.clone(),
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Marks a token call `abandoned` when dropped before it was finished.
pub(crate) struct TokenCallGuard {
    shared: Arc<Shared>,
    seq: u64,
    finished: bool,
}

impl TokenCallGuard {
    pub(crate) fn begin(
        shared: &Arc<Shared>,
        grant_type: String,
        refresh_token: Option<String>,
    ) -> TokenCallGuard {
        TokenCallGuard {
            seq: shared.begin_token_call(grant_type, refresh_token),
            shared: shared.clone(),
            finished: false,
        }
    }

    pub(crate) fn finish(mut self, resp: Response, outcome: &str) -> Response {
        let status = if is_dropped(&resp) {
            0
        } else {
            resp.status().as_u16()
        };
        self.shared.finish_token_call(self.seq, status, outcome);
        self.finished = true;
        resp
    }
}

impl Drop for TokenCallGuard {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.finish_token_call(self.seq, 0, "abandoned");
        }
    }
}
