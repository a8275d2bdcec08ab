//! The refresh engine: keeps OAuth access tokens alive without ever stampeding the token endpoint, replaying its 429s,
//! or sending a rotated-out refresh token.
//!
//! Design (see ARCHITECTURE.md for the invariants):
//! - Each account owns a [`CredentialCell`]: its latest stored account row plus refresh state (the flight in progress,
//!   backoff, re-auth flag, a rotation not yet persisted). The cell lives in the pool's account entry and is dropped with
//!   it; the engine keeps no map of its own, so state is bounded by the number of accounts.
//! - A refresh is a *flight*: a task on the engine's [`TaskTracker`] that owns the work; callers only hold a
//!   `watch::Receiver` to its result. Dropping a caller (client disconnect) never cancels the flight, and a caller
//!   stops waiting the moment its own future is dropped. At most one flight per cell exists, decided under the cell's
//!   lock, so N concurrent callers cause exactly one token-endpoint exchange.
//! - Before calling the endpoint a flight re-reads the stored account: someone else (the CLI, an import, another
//!   process) may have rotated it already. After a successful exchange the new tokens are written to the store
//!   (compare-and-set on the version) *before* the cell publishes them; if the write fails the cell keeps the
//!   tokens as pending and the account is held (not used) until a later flight persists them, without calling the endpoint.
//! - A 429 blocks every path (request, proactive, admin) until its Retry-After (or a jittered backoff) has passed: the
//!   block is checked under the same lock that starts flights.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::account::{Account, AccountKind, Credential};
use crate::backoff::Backoff;
use crate::clock::SharedClock;
use crate::config::RefreshConfig;
use crate::oauth::{TokenEndpoint, TokenError, TokenResponse};
use crate::store::{AccountUpdate, Fence, SharedStore, StoreError};

/// How often a process waiting for another's refresh re-reads the store.
const LEASE_POLL: Duration = Duration::from_millis(200);

/// A token this close to expiry is treated as expired on the request path (a request takes time to reach upstream).
pub const EXPIRY_SKEW: Duration = Duration::from_secs(30);

/// Why a credential cannot be had right now. Cloned to every waiter of a flight.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RefreshError {
    #[error("account needs re-authentication: {0}")]
    NeedsReauth(String),
    /// The token endpoint rate-limited us or failed; no call before `until`.
    #[error("token refresh is backing off until {until_wall} ({reason})")]
    Backoff {
        until: Instant,
        until_wall: DateTime<Utc>,
        rate_limited: bool,
        reason: String,
    },
    /// The last flight failed on transient errors after `attempts` real calls.
    #[error("token refresh failed after {attempts} attempt{}: {cause}", if *attempts == 1 { "" } else { "s" })]
    Transient {
        attempts: u32,
        cause: String,
        next_try: Instant,
    },
    /// New tokens were obtained but could not be written to the store; the account is held until they are.
    #[error("account held: rotated credential not yet persisted ({0})")]
    Held(String),
    /// The store could not be read, so no refresh was attempted (we could not persist its result).
    #[error("store unavailable, refresh not attempted: {0}")]
    Store(String),
    #[error("refresh did not finish within the refresh timeout")]
    Timeout,
    #[error("account was removed")]
    Removed,
}

impl RefreshError {
    /// When this account may be usable again, if that is known.
    pub fn retry_at(&self) -> Option<Instant> {
        match self {
            RefreshError::Backoff { until, .. } => Some(*until),
            RefreshError::Transient { next_try, .. } => Some(*next_try),
            _ => None,
        }
    }
}

/// What the admin API shows about an account's credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialState {
    Ready,
    RefreshBackoff,
    /// A rotation is not yet persisted: the account must not be used.
    Held,
    NeedsReauth,
}

type FlightResult = Option<Result<Arc<Account>, RefreshError>>;

#[derive(Debug)]
struct CellState {
    account: Arc<Account>,
    flight: Option<watch::Receiver<FlightResult>>,
    blocked_until: Option<Instant>,
    block_rate_limited: bool,
    block_reason: String,
    rate_limit_strikes: u32,
    failures: u32,
    needs_reauth: Option<String>,
    /// Tokens obtained from the endpoint but not yet persisted.
    pending: Option<TokenResponse>,
    last_error: Option<String>,
}

/// One account's credential and refresh state.
#[derive(Debug)]
pub struct CredentialCell {
    state: Mutex<CellState>,
}

impl CredentialCell {
    pub fn new(account: Account) -> Arc<Self> {
        let needs_reauth = account.needs_reauth.clone();
        Arc::new(CredentialCell {
            state: Mutex::new(CellState {
                account: Arc::new(account),
                flight: None,
                blocked_until: None,
                block_rate_limited: false,
                block_reason: String::new(),
                rate_limit_strikes: 0,
                failures: 0,
                needs_reauth,
                pending: None,
                last_error: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, CellState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest known account row.
    pub fn account(&self) -> Arc<Account> {
        self.lock().account.clone()
    }

    /// Adopts a row read from the store if it is newer than what the cell holds. A row whose re-auth flag was cleared
    /// (re-import, login) clears the cell's flag too.
    pub fn observe_stored(&self, stored: Account) {
        let mut st = self.lock();
        if stored.version <= st.account.version {
            return;
        }
        if stored.credential != st.account.credential {
            st.pending = None;
            st.failures = 0;
        }
        st.needs_reauth = stored.needs_reauth.clone();
        st.account = Arc::new(stored);
    }

    /// Adopts a refresh block another process recorded (`until` is wall-clock).
    pub fn observe_block(&self, now: DateTime<Utc>, until: DateTime<Utc>, reason: &str) {
        let left = (until - now).to_std().unwrap_or_default();
        if left.is_zero() {
            return;
        }
        let until_i = Instant::now() + left;
        let mut st = self.lock();
        if st.blocked_until.is_none_or(|t| t < until_i) {
            st.blocked_until = Some(until_i);
            st.block_rate_limited = reason.contains("429");
            st.block_reason = reason.to_string();
            st.last_error = Some(reason.to_string());
        }
    }

    /// The credential state now, and when a backoff ends.
    /// The account and whether its credential may be used now: one lock, no allocation (the scheduler's hot path).
    pub fn gate(&self) -> (Arc<Account>, CredentialState, Option<Instant>) {
        let st = self.lock();
        let (state, until) = if st.needs_reauth.is_some() {
            (CredentialState::NeedsReauth, None)
        } else if st.pending.is_some() {
            (CredentialState::Held, st.blocked_until)
        } else {
            match st.blocked_until {
                Some(t) if t > Instant::now() => (CredentialState::RefreshBackoff, Some(t)),
                _ => (CredentialState::Ready, None),
            }
        };
        (st.account.clone(), state, until)
    }

    pub fn state(&self) -> (CredentialState, Option<Instant>, Option<String>) {
        let st = self.lock();
        let now = Instant::now();
        if let Some(r) = &st.needs_reauth {
            return (CredentialState::NeedsReauth, None, Some(r.clone()));
        }
        if st.pending.is_some() {
            return (
                CredentialState::Held,
                st.blocked_until,
                st.last_error.clone(),
            );
        }
        match st.blocked_until {
            Some(t) if t > now => (
                CredentialState::RefreshBackoff,
                Some(t),
                st.last_error.clone(),
            ),
            _ => (CredentialState::Ready, None, st.last_error.clone()),
        }
    }

    /// Whether a flight is running (tests and admin).
    pub fn refreshing(&self) -> bool {
        self.lock().flight.is_some()
    }
}

/// Timing knobs of the engine, as durations.
#[derive(Debug, Clone)]
pub struct RefreshSettings {
    pub lead: Duration,
    pub lead_jitter: f64,
    pub call_timeout: Duration,
    pub wait_timeout: Duration,
    pub max_attempts: u32,
    pub transient_backoff: Backoff,
    pub rate_limit_backoff: Backoff,
    pub max_retry_after: Duration,
    /// How long a refresh lease is held at most (a holder that dies frees it after this).
    pub lease_ttl: Duration,
}

impl From<&RefreshConfig> for RefreshSettings {
    fn from(c: &RefreshConfig) -> Self {
        let max = Duration::from_secs(c.backoff_max_secs);
        RefreshSettings {
            lead: Duration::from_secs(c.lead_secs),
            lead_jitter: c.lead_jitter,
            call_timeout: Duration::from_secs_f64(c.call_timeout_secs),
            wait_timeout: Duration::from_secs_f64(c.refresh_timeout_secs),
            max_attempts: c.max_attempts,
            transient_backoff: Backoff::new(Duration::from_millis(c.backoff_base_ms), max),
            rate_limit_backoff: Backoff::new(
                Duration::from_secs(c.rate_limit_backoff_base_secs),
                max,
            ),
            max_retry_after: Duration::from_secs(c.max_retry_after_secs),
            lease_ttl: Duration::from_secs_f64(c.lease_secs),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Want<'a> {
    /// A token valid for at least [`EXPIRY_SKEW`].
    Fresh,
    /// Upstream rejected this secret: replace it unless the cell already moved on.
    Replace(&'a str),
    /// Refresh ahead of expiry; do not wait.
    Ahead,
}

#[derive(Debug, Clone)]
pub struct RefreshEngine {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: SharedStore,
    endpoint: Arc<dyn TokenEndpoint>,
    clock: SharedClock,
    settings: RefreshSettings,
    tasks: TaskTracker,
    /// This process's name as a refresh-lease holder.
    holder: String,
}

/// Whether the account's token is valid for at least `margin` more.
pub fn fresh(account: &Account, now: DateTime<Utc>, margin: Duration) -> bool {
    match account.credential.expires_at {
        None => true,
        Some(exp) => {
            exp - chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::zero()) > now
        }
    }
}

impl RefreshEngine {
    pub fn new(
        store: SharedStore,
        endpoint: Arc<dyn TokenEndpoint>,
        clock: SharedClock,
        settings: RefreshSettings,
    ) -> Self {
        let holder = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        RefreshEngine {
            inner: Arc::new(Inner {
                store,
                endpoint,
                clock,
                settings,
                tasks: TaskTracker::new(),
                holder,
            }),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Takes an account out of service after upstream refused its credential (401 after a refresh, 403). Persisted so
    /// it survives restarts; cleared by re-import, login or `accounts enable`.
    pub fn mark_rejected(&self, cell: &Arc<CredentialCell>, reason: String) {
        let account = {
            let mut st = cell.lock();
            st.needs_reauth = Some(reason.clone());
            st.last_error = Some(reason.clone());
            st.account.clone()
        };
        self.spawn_persist_reauth(account, reason);
    }

    /// The tracker of refresh flights (shutdown waits on it).
    pub fn tasks(&self) -> &TaskTracker {
        &self.inner.tasks
    }

    /// A usable credential: the current one while it is fresh, else the result of the (single) refresh flight.
    pub async fn credential(
        &self,
        cell: &Arc<CredentialCell>,
    ) -> Result<Arc<Account>, RefreshError> {
        self.get(cell, Want::Fresh).await
    }

    /// Upstream answered 401 to `rejected_secret`: refresh once (deduplicated), unless the cell already holds a newer
    /// credential, which is returned instead.
    pub async fn replace_rejected(
        &self,
        cell: &Arc<CredentialCell>,
        rejected_secret: &str,
    ) -> Result<Arc<Account>, RefreshError> {
        self.get(cell, Want::Replace(rejected_secret)).await
    }

    /// Starts a refresh if the token is within its (per-account jittered) lead time and nothing blocks it. Never waits.
    pub fn refresh_ahead(&self, cell: &Arc<CredentialCell>) {
        let _ = self.begin(cell, Want::Ahead);
    }

    /// Starts a refresh now unless one runs or a backoff forbids it (admin "refresh now"). Never waits.
    pub fn refresh_now(&self, cell: &Arc<CredentialCell>) -> Result<(), RefreshError> {
        let secret = cell.account().credential.secret.clone();
        self.begin(cell, Want::Replace(&secret)).map(|_| ())
    }

    async fn get(
        &self,
        cell: &Arc<CredentialCell>,
        want: Want<'_>,
    ) -> Result<Arc<Account>, RefreshError> {
        let mut rx = match self.begin(cell, want)? {
            Started::Ready(account) => return Ok(account),
            Started::Waiting(rx) => rx,
        };
        let wait = async { rx.wait_for(Option::is_some).await.map(|r| r.clone()) };
        match tokio::time::timeout(self.inner.settings.wait_timeout, wait).await {
            Ok(Ok(result)) => result.unwrap_or(Err(RefreshError::Timeout)),
            // The flight's sender is gone without a result: only possible if its task was aborted (runtime shutdown).
            Ok(Err(_)) => Err(RefreshError::Timeout),
            Err(_) => Err(RefreshError::Timeout),
        }
    }

    /// The decision point, under the cell's lock: use the current token, join the running flight, refuse because of a
    /// backoff or re-auth, or start the one flight.
    fn begin(&self, cell: &Arc<CredentialCell>, want: Want<'_>) -> Result<Started, RefreshError> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut st = cell.lock();
        if let Some(reason) = &st.needs_reauth {
            return Err(RefreshError::NeedsReauth(reason.clone()));
        }
        let account = st.account.clone();
        if account.kind == AccountKind::ApiKey {
            return Ok(Started::Ready(account));
        }
        let usable = st.pending.is_none() && fresh(&account, now, EXPIRY_SKEW);
        match want {
            Want::Fresh if usable => return Ok(Started::Ready(account)),
            Want::Replace(secret) if usable && account.credential.secret != secret => {
                return Ok(Started::Ready(account))
            }
            Want::Ahead => {
                let jitter = 1.0 + inner.settings.lead_jitter * crate::backoff::spread(account.id);
                let lead = inner.settings.lead.mul_f64(jitter.max(0.0));
                if st.pending.is_none() && fresh(&account, now, lead) {
                    return Ok(Started::Ready(account));
                }
            }
            _ => {}
        }
        if let Some(rx) = &st.flight {
            return Ok(Started::Waiting(rx.clone()));
        }
        if account.credential.refresh_token.is_none() {
            let reason = "the access token expired and the account has no refresh token (setup token?): create a new token and import it".to_string();
            st.needs_reauth = Some(reason.clone());
            drop(st);
            self.spawn_persist_reauth(account, reason.clone());
            return Err(RefreshError::NeedsReauth(reason));
        }
        if let Some(until) = st.blocked_until.filter(|t| *t > Instant::now()) {
            return Err(RefreshError::Backoff {
                until,
                until_wall: crate::clock::instant_to_wall(inner.clock.as_ref(), until),
                rate_limited: st.block_rate_limited,
                reason: st.block_reason.clone(),
            });
        }
        let (tx, rx) = watch::channel(None);
        st.flight = Some(rx.clone());
        let pending = st.pending.clone();
        drop(st);
        let engine = self.clone();
        let cell = cell.clone();
        inner.tasks.spawn(async move {
            let outcome = engine.fly(account, pending).await;
            let result = engine.settle(&cell, outcome);
            let _ = tx.send(Some(result));
        });
        Ok(Started::Waiting(rx))
    }

    /// Records a refresh block in the store so that no process calls the token endpoint for this account before
    /// `until`. Compare-and-set with a few retries; a lost race only means another writer recorded its own block.
    fn spawn_persist_block(
        &self,
        id: crate::account::AccountId,
        until: DateTime<Utc>,
        reason: String,
    ) {
        let store = self.inner.store.clone();
        self.inner.tasks.spawn(async move {
            for _ in 0..3 {
                let Ok(Some(a)) = store.get_account(id).await else { return };
                if a.refresh_blocked_until.is_some_and(|t| t >= until) {
                    return;
                }
                let update = AccountUpdate { refresh_block: Some(Some((until, reason.clone()))), ..Default::default() };
                match store.update_account(id, a.version, update).await {
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => {
                        tracing::warn!(account = id, error = %e, "could not record the refresh block in the store");
                        return;
                    }
                    Ok(_) => return,
                }
            }
        });
    }

    fn spawn_persist_reauth(&self, account: Arc<Account>, reason: String) {
        let store = self.inner.store.clone();
        self.inner.tasks.spawn(async move {
            let update = AccountUpdate { needs_reauth: Some(Some(reason.clone())), last_error: Some(Some(reason)), ..Default::default() };
            if let Err(e) = store.update_account(account.id, account.version, update).await {
                tracing::warn!(account = %account.name, error = %e, "could not persist needs_reauth");
            }
        });
    }

    /// Applies a flight's outcome to the cell (under its lock, together with ending the flight) and returns what the
    /// waiters get.
    fn settle(
        &self,
        cell: &CredentialCell,
        outcome: Outcome,
    ) -> Result<Arc<Account>, RefreshError> {
        let s = &self.inner.settings;
        // Blocks read from the store are already shared; blocks we learned ourselves are written back.
        let shared_block = !matches!(outcome, Outcome::Blocked { .. });
        let mut st = cell.lock();
        st.flight = None;
        let name = st.account.name.clone();
        let now = Instant::now();
        let result = match outcome {
            Outcome::Refreshed(account) => {
                st.failures = 0;
                st.rate_limit_strikes = 0;
                st.blocked_until = None;
                st.pending = None;
                st.last_error = None;
                st.needs_reauth = None;
                if account.version > st.account.version {
                    st.account = account.clone();
                }
                Ok(st.account.clone())
            }
            Outcome::RateLimited(retry_after) => {
                st.rate_limit_strikes += 1;
                let wait = match retry_after {
                    Some(d) => d.min(s.max_retry_after),
                    None => s.rate_limit_backoff.delay(st.rate_limit_strikes),
                };
                let until = now + wait;
                let reason = match retry_after {
                    Some(_) => format!(
                        "token endpoint answered 429 with Retry-After {}s",
                        wait.as_secs_f64().ceil()
                    ),
                    None => format!(
                        "token endpoint answered 429 without Retry-After; backing off {}s",
                        wait.as_secs_f64().ceil()
                    ),
                };
                st.blocked_until = Some(until);
                st.block_rate_limited = true;
                st.block_reason = reason.clone();
                st.last_error = Some(reason.clone());
                tracing::warn!(account = %name, wait_secs = wait.as_secs_f64(), "token refresh rate limited");
                Err(RefreshError::Backoff {
                    until,
                    until_wall: crate::clock::instant_to_wall(self.inner.clock.as_ref(), until),
                    rate_limited: true,
                    reason,
                })
            }
            Outcome::Transient { attempts, cause } => {
                st.failures += 1;
                let next_try = now + s.transient_backoff.delay(st.failures);
                st.blocked_until = Some(next_try);
                st.block_rate_limited = false;
                let err = RefreshError::Transient {
                    attempts,
                    cause,
                    next_try,
                };
                st.block_reason = err.to_string();
                st.last_error = Some(err.to_string());
                tracing::warn!(account = %name, error = %err, "token refresh failed");
                Err(err)
            }
            Outcome::NeedsReauth(reason) => {
                st.needs_reauth = Some(reason.clone());
                st.last_error = Some(reason.clone());
                tracing::error!(account = %name, reason = %reason, "account needs re-authentication");
                Err(RefreshError::NeedsReauth(reason))
            }
            Outcome::Held { tokens, cause } => {
                st.pending = Some(tokens);
                st.failures += 1;
                st.blocked_until = Some(now + s.transient_backoff.delay(st.failures));
                st.block_rate_limited = false;
                let err = RefreshError::Held(cause);
                st.block_reason = err.to_string();
                st.last_error = Some(err.to_string());
                tracing::error!(account = %name, error = %err, "rotated credential not persisted; account held");
                Err(err)
            }
            Outcome::StoreDown(cause) => {
                st.failures += 1;
                st.blocked_until = Some(now + s.transient_backoff.delay(st.failures));
                st.block_rate_limited = false;
                st.block_reason = format!("store unavailable: {cause}");
                Err(RefreshError::Store(cause))
            }
            Outcome::Blocked { until, reason } => {
                let left = (until - self.inner.clock.now())
                    .to_std()
                    .unwrap_or_default();
                let until_i = now + left;
                st.blocked_until = Some(st.blocked_until.map_or(until_i, |t| t.max(until_i)));
                st.block_rate_limited = reason.contains("429");
                st.block_reason = reason.clone();
                Err(RefreshError::Backoff {
                    until: until_i,
                    until_wall: until,
                    rate_limited: st.block_rate_limited,
                    reason,
                })
            }
            Outcome::Removed => Err(RefreshError::Removed),
        };
        // A 429's wait and a failure backoff bind every process sharing the store.
        if let (
            Err(RefreshError::Backoff {
                until_wall, reason, ..
            }),
            true,
        ) = (&result, shared_block)
        {
            self.spawn_persist_block(st.account.id, *until_wall, reason.clone());
        }
        if let Err(e @ RefreshError::Transient { next_try, .. }) = &result {
            let wall = crate::clock::instant_to_wall(self.inner.clock.as_ref(), *next_try);
            self.spawn_persist_block(st.account.id, wall, e.to_string());
        }
        result
    }

    /// The flight itself. Never cancelled by callers; bounded by `max_attempts` calls of `call_timeout` each.
    async fn fly(&self, started_from: Arc<Account>, pending: Option<TokenResponse>) -> Outcome {
        let inner = &self.inner;
        let id = started_from.id;
        let reread = || async {
            match inner.store.get_account(id).await {
                Ok(Some(a)) => Ok(a),
                Ok(None) => Err(Outcome::Removed),
                Err(e) => Err(Outcome::StoreDown(e.to_string())),
            }
        };
        // Re-read the stored row: someone (the CLI, another replica) may have rotated the token since we loaded it.
        let mut stored = match reread().await {
            Ok(a) => a,
            Err(o) => return o,
        };
        // One holder at a time across every process sharing the store; others wait for its result.
        let give_up = Instant::now() + inner.settings.lease_ttl.saturating_mul(2);
        let fence = loop {
            if pending.is_none() {
                if let Some(done) = self.settled_elsewhere(&started_from, &stored) {
                    return done;
                }
            }
            match inner
                .store
                .acquire_refresh_lease(id, &inner.holder, inner.settings.lease_ttl)
                .await
            {
                Ok(Some(token)) => {
                    break Fence {
                        holder: inner.holder.clone(),
                        token,
                    }
                }
                Ok(None) if Instant::now() < give_up => {
                    tokio::time::sleep(LEASE_POLL).await;
                    stored = match reread().await {
                        Ok(a) => a,
                        Err(o) => return o,
                    };
                }
                Ok(None) => {
                    return Outcome::Transient {
                        attempts: 0,
                        cause: "another process held the refresh lease for too long".into(),
                    }
                }
                Err(e) => return Outcome::StoreDown(e.to_string()),
            }
        };
        // The previous holder may have finished just before we took the lease.
        stored = match reread().await {
            Ok(a) => a,
            Err(o) => {
                let _ = inner.store.release_refresh_lease(id, &fence).await;
                return o;
            }
        };
        let work = async {
            match pending {
                // A rotation we could not persist before: persist it now, do not call the endpoint.
                Some(tokens) => self.persist(stored, tokens, &fence).await,
                None => match self.settled_elsewhere(&started_from, &stored) {
                    Some(done) => done,
                    None => self.exchange(stored, &fence).await,
                },
            }
        };
        // Keep the lease while the work runs (a slow endpoint, retries): a live holder never loses it to a timeout;
        // only a holder that died stops renewing and is taken over after `lease_ttl`.
        let renew = async {
            let every = inner.settings.lease_ttl / 3;
            loop {
                tokio::time::sleep(every).await;
                match inner
                    .store
                    .renew_refresh_lease(id, &fence, inner.settings.lease_ttl)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(
                            account = id,
                            "refresh lease taken by another holder; its writes are fenced"
                        );
                        std::future::pending::<()>().await;
                    }
                    Err(e) => tracing::debug!(error = %e, "could not renew the refresh lease"),
                }
            }
        };
        let outcome = tokio::select! {
            outcome = work => outcome,
            () = renew => unreachable_outcome(),
        };
        // Record the least wait this failure implies before giving the lease up, so no other process can slip a call
        // in between (the exact, possibly longer, wait is written when the outcome settles).
        let floor = match &outcome {
            Outcome::RateLimited(Some(d)) => Some((
                (*d).min(inner.settings.max_retry_after),
                "token endpoint answered 429",
            )),
            Outcome::RateLimited(None) => Some((
                inner.settings.rate_limit_backoff.base / 2,
                "token endpoint answered 429",
            )),
            Outcome::Transient { .. } => Some((
                inner.settings.transient_backoff.base / 2,
                "token refresh failed",
            )),
            _ => None,
        };
        if let Some((wait, reason)) = floor {
            let until = inner.clock.now() + chrono::Duration::from_std(wait).unwrap_or_default();
            if let Ok(Some(a)) = inner.store.get_account(id).await {
                let update = AccountUpdate {
                    refresh_block: Some(Some((until, reason.to_string()))),
                    ..Default::default()
                };
                if let Err(e) = inner
                    .store
                    .update_account_fenced(id, a.version, &fence, update)
                    .await
                {
                    tracing::debug!(error = %e, "could not record the refresh block before releasing the lease");
                }
            }
        }
        if let Err(e) = inner.store.release_refresh_lease(id, &fence).await {
            tracing::debug!(error = %e, "could not release the refresh lease; it expires on its own");
        }
        outcome
    }

    /// Whether the stored row makes an exchange unnecessary or forbidden: re-auth needed, already rotated by someone
    /// else, or a refresh block (a 429's Retry-After) recorded by any process.
    fn settled_elsewhere(&self, started_from: &Account, stored: &Account) -> Option<Outcome> {
        let now = self.inner.clock.now();
        if stored.needs_reauth.is_some() && stored.version >= started_from.version {
            return Some(Outcome::NeedsReauth(
                stored.needs_reauth.clone().unwrap_or_default(),
            ));
        }
        if stored.credential.secret != started_from.credential.secret
            && fresh(stored, now, EXPIRY_SKEW)
        {
            tracing::info!(account = %stored.name, "credential already rotated elsewhere; adopting it");
            return Some(Outcome::Refreshed(Arc::new(stored.clone())));
        }
        if let Some(until) = stored.refresh_blocked_until.filter(|t| *t > now) {
            let reason = stored
                .refresh_block_reason
                .clone()
                .unwrap_or_else(|| "refresh blocked".into());
            return Some(Outcome::Blocked { until, reason });
        }
        None
    }

    /// Calls the token endpoint (bounded attempts) and persists the result under `fence`.
    async fn exchange(&self, stored: Account, fence: &Fence) -> Outcome {
        let inner = &self.inner;
        let Some(refresh_token) = stored.credential.refresh_token.clone() else {
            return Outcome::NeedsReauth("no refresh token stored".into());
        };
        let mut attempts = 0u32;
        let mut lost_once = false;
        loop {
            attempts += 1;
            let result = match tokio::time::timeout(
                inner.settings.call_timeout,
                inner.endpoint.refresh(&refresh_token),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(TokenError::Timeout),
            };
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.outcome(),
            };
            metrics::counter!("gateway_refresh_attempts_total", "outcome" => outcome).increment(1);
            tracing::info!(account = %stored.name, attempt = attempts, outcome, "token refresh attempt");
            let err = match result {
                Ok(tokens) => return self.persist(stored, tokens, fence).await,
                Err(e) => e,
            };
            match err {
                TokenError::RateLimited { retry_after } => {
                    return Outcome::RateLimited(retry_after)
                }
                TokenError::Rejected { .. } => {
                    // Someone may have rotated the token under us: only a credential that is still ours is given up.
                    match inner.store.get_account(stored.id).await {
                        Ok(Some(now_stored))
                            if now_stored.credential.refresh_token.as_deref()
                                != Some(refresh_token.as_str()) =>
                        {
                            tracing::info!(account = %stored.name, "refresh token rotated elsewhere; adopting the stored one");
                            return Outcome::Refreshed(Arc::new(now_stored));
                        }
                        Ok(Some(now_stored)) => {
                            let reason = if lost_once {
                                format!("the token endpoint's answer to a refresh was lost, and the refresh token was then refused ({err}); the outcome of that refresh is unknown: log in again or re-import the account")
                            } else {
                                format!("the refresh token was refused ({err}): log in again or re-import the account")
                            };
                            let update = AccountUpdate {
                                needs_reauth: Some(Some(reason.clone())),
                                last_error: Some(Some(reason.clone())),
                                ..Default::default()
                            };
                            if let Err(e) = inner
                                .store
                                .update_account(now_stored.id, now_stored.version, update)
                                .await
                            {
                                tracing::warn!(account = %stored.name, error = %e, "could not persist needs_reauth");
                            }
                            return Outcome::NeedsReauth(reason);
                        }
                        Ok(None) => return Outcome::Removed,
                        Err(e) => return Outcome::StoreDown(e.to_string()),
                    }
                }
                e if e.outcome_unknown() && !lost_once => {
                    // The endpoint may have rotated the token without us seeing the answer. The old token is tried
                    // exactly once more: if it was not rotated this simply succeeds.
                    lost_once = true;
                    tracing::warn!(account = %stored.name, error = %e, "refresh answer lost; retrying once with the same token");
                    continue;
                }
                e => {
                    if attempts >= inner.settings.max_attempts {
                        return Outcome::Transient {
                            attempts,
                            cause: e.to_string(),
                        };
                    }
                    tokio::time::sleep(inner.settings.transient_backoff.delay(attempts)).await;
                }
            }
        }
    }

    /// Writes new tokens with compare-and-set on the version read at the start of the flight, fenced by the refresh
    /// lease, and lifts any refresh block.
    async fn persist(&self, stored: Account, tokens: TokenResponse, fence: &Fence) -> Outcome {
        let inner = &self.inner;
        let expires_at = tokens.expires_in.map(|s| {
            inner.clock.now()
                + chrono::Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX / 2_000))
        });
        let credential = Credential {
            secret: tokens.access_token.clone(),
            // A provider that does not rotate answers without a refresh token: keep the one we have.
            refresh_token: tokens
                .refresh_token
                .clone()
                .or_else(|| stored.credential.refresh_token.clone()),
            expires_at,
        };
        let mut update = AccountUpdate {
            credential: Some(credential),
            needs_reauth: Some(None),
            last_error: Some(None),
            refresh_block: Some(None),
            ..Default::default()
        };
        if let Some(email) = tokens
            .account
            .as_ref()
            .and_then(|a| a.email_address.clone())
        {
            update.email = Some(Some(email));
        }
        if let Some(org) = tokens.organization.as_ref().and_then(|o| o.name.clone()) {
            update.organization_name = Some(Some(org));
        }
        let mut expected = stored.version;
        for _ in 0..3 {
            match inner
                .store
                .update_account_fenced(stored.id, expected, fence, update.clone())
                .await
            {
                Ok(account) => {
                    tracing::info!(account = %account.name, expires_at = ?account.credential.expires_at, "token refreshed");
                    return Outcome::Refreshed(Arc::new(account));
                }
                Err(StoreError::Conflict { .. }) => {
                    match inner.store.get_account(stored.id).await {
                        // Only metadata changed under us (disable, rename): retry on the new version.
                        Ok(Some(now_stored))
                            if now_stored.credential.refresh_token
                                == stored.credential.refresh_token =>
                        {
                            expected = now_stored.version;
                        }
                        // Someone stored another credential (re-import, login): theirs is the newer intent.
                        Ok(Some(now_stored)) => return Outcome::Refreshed(Arc::new(now_stored)),
                        Ok(None) => return Outcome::Removed,
                        Err(e) => {
                            return Outcome::Held {
                                tokens,
                                cause: e.to_string(),
                            }
                        }
                    }
                }
                Err(StoreError::NotFound(_)) => return Outcome::Removed,
                Err(StoreError::Fenced(_)) => {
                    return match inner.store.get_account(stored.id).await {
                        // The lease passed to another holder who already stored a newer credential: theirs stands.
                        Ok(Some(now_stored))
                            if now_stored.credential.refresh_token
                                != stored.credential.refresh_token =>
                        {
                            Outcome::Refreshed(Arc::new(now_stored))
                        }
                        _ => Outcome::Held {
                            tokens,
                            cause: "the refresh lease expired before the rotation was written"
                                .into(),
                        },
                    };
                }
                Err(e) => {
                    return Outcome::Held {
                        tokens,
                        cause: e.to_string(),
                    }
                }
            }
        }
        Outcome::Held {
            tokens,
            cause: "the account kept changing while the rotation was written".into(),
        }
    }
}

/// `renew` loops forever; this only satisfies the type of the `select!` arm.
fn unreachable_outcome() -> Outcome {
    Outcome::Transient {
        attempts: 0,
        cause: "lease renewal ended".into(),
    }
}

enum Started {
    Ready(Arc<Account>),
    Waiting(watch::Receiver<FlightResult>),
}

#[derive(Debug)]
enum Outcome {
    Refreshed(Arc<Account>),
    RateLimited(Option<Duration>),
    Transient {
        attempts: u32,
        cause: String,
    },
    NeedsReauth(String),
    /// A refresh block recorded in the store (by this or another process) forbids calling now.
    Blocked {
        until: DateTime<Utc>,
        reason: String,
    },
    Held {
        tokens: TokenResponse,
        cause: String,
    },
    StoreDown(String),
    Removed,
}

#[cfg(test)]
mod tests;
