//! One account's credential and refresh state, and the lock every refresh decision is taken under.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::account::Account;
use crate::oauth::TokenResponse;

use super::*;

/// What the admin API shows about an account's credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialState {
    Ready,
    RefreshBackoff,
    /// A rotation is not yet persisted: the account must not be used.
    Held,
    NeedsReauth,
}

pub(super) type FlightResult = Option<Result<Arc<Account>, RefreshError>>;

#[derive(Debug)]
pub(super) struct CellState {
    pub(super) account: Arc<Account>,
    pub(super) flight: Option<watch::Receiver<FlightResult>>,
    /// Whether a request waits for the running flight (its token call goes before proactive ones).
    pub(super) flight_urgent: Arc<AtomicBool>,
    /// How long the current token lives (from its rotation to its expiry): the request-path margin and the proactive
    /// lead scale with it.
    pub(super) lifetime: Duration,
    pub(super) blocked_until: Option<Instant>,
    pub(super) block_rate_limited: bool,
    pub(super) block_reason: String,
    pub(super) rate_limit_strikes: u32,
    pub(super) failures: u32,
    pub(super) needs_reauth: Option<String>,
    /// Tokens obtained from the endpoint but not yet persisted.
    pub(super) pending: Option<TokenResponse>,
    pub(super) last_error: Option<String>,
}

/// One account's credential and refresh state.
#[derive(Debug)]
pub struct CredentialCell {
    state: Mutex<CellState>,
    on_change: OnceLock<ChangeHook>,
}

/// Called after every change of what [`CredentialCell::gate`] reports (the pool's ready index listens).
struct ChangeHook(Box<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for ChangeHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeHook")
    }
}

impl CredentialCell {
    pub fn new(account: Account) -> Arc<Self> {
        let needs_reauth = account.needs_reauth.clone();
        let lifetime = lifetime_of(&account);
        Arc::new(CredentialCell {
            state: Mutex::new(CellState {
                account: Arc::new(account),
                flight: None,
                flight_urgent: Arc::default(),
                lifetime,
                blocked_until: None,
                block_rate_limited: false,
                block_reason: String::new(),
                rate_limit_strikes: 0,
                failures: 0,
                needs_reauth,
                pending: None,
                last_error: None,
            }),
            on_change: OnceLock::new(),
        })
    }

    /// Installs the one listener told about every change of the gate's answer (set once, by the pool entry).
    pub fn on_change(&self, hook: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_change.set(ChangeHook(Box::new(hook)));
    }

    /// Tells the listener the gate's answer may have changed.
    fn changed(&self) {
        if let Some(hook) = self.on_change.get() {
            (hook.0)();
        }
    }

    /// The cell's state under its lock. Writing through the guard reports a change to the listener when the guard is
    /// dropped, so no mutation can forget to.
    pub(super) fn lock(&self) -> CellGuard<'_> {
        CellGuard {
            cell: self,
            state: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            wrote: false,
        }
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
            // Our own failure backoff was about the old credential; a 429's block binds whatever the credential.
            if !st.block_rate_limited {
                st.blocked_until = None;
            }
            st.lifetime = lifetime_of(&stored);
        }
        // A `needs_reauth` judged the credential the row holds; while the cell holds a newer, unsaved rotation of
        // that very credential, the verdict is about a token we already replaced and does not override ours.
        if st.pending.is_none() || stored.needs_reauth.is_none() {
            st.needs_reauth = stored.needs_reauth.clone();
        } else {
            tracing::warn!(account = %stored.name, "ignoring needs_reauth recorded about a refresh token this process already rotated");
        }
        st.account = Arc::new(stored);
    }

    /// Adopts a refresh block another process recorded (`until` is wall-clock).
    pub fn observe_block(&self, now: DateTime<Utc>, until: DateTime<Utc>, reason: &str) {
        let left = crate::clock::wait_until(now, until);
        if left.is_zero() {
            return;
        }
        let until_i = crate::clock::instant_in(left);
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
        match classify(&st, Instant::now()) {
            CredentialState::NeedsReauth => {
                (CredentialState::NeedsReauth, None, st.needs_reauth.clone())
            }
            CredentialState::Ready => (CredentialState::Ready, None, st.last_error.clone()),
            s @ (CredentialState::Held | CredentialState::RefreshBackoff) => {
                (s, st.blocked_until, st.last_error.clone())
            }
        }
    }

    /// The state alone, [`Self::state`] without copying its texts (the alert check reads it for every account).
    pub fn credential_state(&self) -> CredentialState {
        classify(&self.lock(), Instant::now())
    }

    /// Whether `account`'s token (as returned by [`Self::gate`]) is good for a request at `now`: valid for more than the
    /// margin its lifetime calls for.
    pub fn fresh_for_request(&self, account: &Account, now: DateTime<Utc>) -> bool {
        let lifetime = self.lock().lifetime;
        fresh(account, now, expiry_skew(lifetime))
    }

    /// How long before its expiry a token stops being good for a request (scaled to its lifetime).
    pub fn request_margin(&self) -> Duration {
        expiry_skew(self.lock().lifetime)
    }

    /// Whether a flight is running (tests and admin).
    pub fn refreshing(&self) -> bool {
        self.lock().flight.is_some()
    }
}

/// What the admin API calls a cell's credential state at `now`.
fn classify(st: &CellState, now: Instant) -> CredentialState {
    if st.needs_reauth.is_some() {
        CredentialState::NeedsReauth
    } else if st.pending.is_some() {
        CredentialState::Held
    } else if st.blocked_until.is_some_and(|t| t > now) {
        CredentialState::RefreshBackoff
    } else {
        CredentialState::Ready
    }
}

/// The cell's lock, which reports a change when something was written through it. The report is made under the lock
/// (it only queues the entry's id; nothing that takes this lock is called from there).
pub(super) struct CellGuard<'a> {
    cell: &'a CredentialCell,
    state: MutexGuard<'a, CellState>,
    wrote: bool,
}

impl std::ops::Deref for CellGuard<'_> {
    type Target = CellState;
    fn deref(&self) -> &CellState {
        &self.state
    }
}

impl std::ops::DerefMut for CellGuard<'_> {
    fn deref_mut(&mut self) -> &mut CellState {
        self.wrote = true;
        &mut self.state
    }
}

impl Drop for CellGuard<'_> {
    fn drop(&mut self) {
        if self.wrote {
            self.cell.changed();
        }
    }
}
