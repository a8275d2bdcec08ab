//! The engine: the decision point (`begin`), waiting, settling a flight's outcome into its cell.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::account::{Account, AccountKind};
use crate::clock::SharedClock;
use crate::oauth::TokenEndpoint;
use crate::store::Patch;
use crate::store::{AccountUpdate, SharedStore, StoreError};

use super::cell::FlightResult;
use super::flight::Outcome;
use super::*;

#[derive(Debug, Clone, Copy)]
enum Want<'a> {
    /// A token valid for at least the margin its lifetime calls for ([`expiry_skew`]).
    Fresh,
    /// Upstream rejected this secret: replace it unless the cell already moved on.
    Replace(&'a str),
    /// Refresh ahead of expiry; do not wait.
    Ahead,
}

#[derive(Debug, Clone)]
pub struct RefreshEngine {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) store: SharedStore,
    pub(super) endpoint: Arc<dyn TokenEndpoint>,
    pub(super) clock: SharedClock,
    pub(super) settings: RefreshSettings,
    pub(super) tasks: TaskTracker,
    pub(super) budget: super::budget::Budget,
    /// This process's name as a refresh-lease holder.
    pub(super) holder: String,
    /// Rotations not yet in the store and refresh tokens in doubt (see `journal.rs`).
    pub(super) journal: Journal,
}

impl RefreshEngine {
    /// An engine whose journal lives in memory only (tests); the server uses [`Self::with_journal`].
    #[cfg(test)]
    pub fn new(
        store: SharedStore,
        endpoint: Arc<dyn TokenEndpoint>,
        clock: SharedClock,
        settings: RefreshSettings,
    ) -> Self {
        Self::with_journal(store, endpoint, clock, settings, Journal::memory())
    }

    pub fn with_journal(
        store: SharedStore,
        endpoint: Arc<dyn TokenEndpoint>,
        clock: SharedClock,
        settings: RefreshSettings,
        journal: Journal,
    ) -> Self {
        // Every store call of the engine has a deadline (the lease's time-to-live): a hung store must not stall a
        // flight, whose lease renewal would otherwise go on forever.
        let store: SharedStore = Arc::new(crate::store::deadline::DeadlineStore::new(
            store,
            settings.lease_ttl,
        ));
        let holder = format!("{}-{:016x}", std::process::id(), rand::random::<u64>());
        RefreshEngine {
            inner: Arc::new(Inner {
                store,
                endpoint,
                clock,
                settings,
                tasks: TaskTracker::new(),
                budget: Default::default(),
                holder,
                journal,
            }),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// Takes an account out of service after upstream refused `secret` itself (a credential check failed). Persisted
    /// so it survives restarts; cleared by re-import, login or `accounts enable`.
    ///
    /// A rejection is about the token that was sent: when the cell no longer holds `secret` (a refresh or re-import
    /// replaced it meanwhile) nothing is marked and `false` is returned.
    pub fn mark_rejected(&self, cell: &Arc<CredentialCell>, secret: &str, reason: String) -> bool {
        let account = {
            let mut st = cell.lock();
            if st.account.credential.secret != secret {
                return false;
            }
            st.needs_reauth = Some(reason.clone());
            st.last_error = Some(reason.clone());
            st.account.clone()
        };
        self.spawn_persist_reauth(account, reason);
        true
    }

    /// Records that Anthropic refuses the account's organization permanently (`message` is upstream's), here and in
    /// the store. Like [`Self::mark_rejected`], only while the cell still holds `secret`.
    pub fn mark_banned(&self, cell: &Arc<CredentialCell>, secret: &str, message: String) -> bool {
        let account = {
            let mut st = cell.lock();
            if st.account.credential.secret != secret {
                return false;
            }
            let mut banned = (*st.account).clone();
            banned.banned = Some(message.clone());
            banned.last_error = Some(message.clone());
            st.last_error = Some(message.clone());
            st.account = Arc::new(banned);
            st.account.clone()
        };
        self.spawn_persist_ban(account, message);
        true
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

    /// The proactive scan: starts the refreshes of enabled accounts within their lead time, soonest expiry first, and
    /// no more than the token-endpoint budget serves until the next scan, so tokens that expire together are refreshed
    /// as a steady trickle over the lead window rather than a burst.
    pub fn refresh_ahead_all<'a>(&self, cells: impl IntoIterator<Item = &'a Arc<CredentialCell>>) {
        let now = self.now();
        let mut due: Vec<(DateTime<Utc>, &Arc<CredentialCell>)> = cells
            .into_iter()
            .filter_map(|cell| {
                let st = cell.lock();
                let a = &st.account;
                let due = !a.disabled
                    && a.banned.is_none()
                    && a.refreshable()
                    && st.flight.is_none()
                    && st.needs_reauth.is_none()
                    && !self.ahead_fresh(&st, now);
                due.then(|| (a.credential.expires_at.unwrap_or(now), cell))
            })
            .collect();
        due.sort_by_key(|(expires, _)| *expires);
        for (_, cell) in due.into_iter().take(self.ahead_quota()) {
            self.refresh_ahead(cell);
        }
    }

    /// Whether the cell's token is valid beyond its (per-account jittered, lifetime-scaled) proactive lead.
    fn ahead_fresh(&self, st: &super::cell::CellState, now: DateTime<Utc>) -> bool {
        let s = &self.inner.settings;
        let jitter = 1.0 + s.lead_jitter * crate::backoff::spread(st.account.id);
        st.pending.is_none()
            && fresh(
                &st.account,
                now,
                proactive_lead(s.lead, st.lifetime, jitter),
            )
    }

    /// Starts a refresh now unless one runs or a backoff forbids it (admin "refresh now"). Never waits.
    pub fn refresh_now(&self, cell: &Arc<CredentialCell>) -> Result<(), RefreshError> {
        let secret = cell.account().credential.secret.clone();
        self.begin(cell, Want::Replace(&secret)).map(|_| ())
    }

    /// A usable credential if one is had within `grace`: the current one while it is fresh, else the refresh's
    /// result if it arrives in time. A refresh still waiting (for its turn at the token endpoint, say) keeps running
    /// and is reported as [`RefreshError::Queued`], so the caller may serve on an account whose token is valid and
    /// come back for this one with [`Self::credential`].
    pub async fn credential_within(
        &self,
        cell: &Arc<CredentialCell>,
        grace: Duration,
    ) -> Result<Arc<Account>, RefreshError> {
        let limit = grace.min(self.inner.settings.wait_timeout);
        match self.get_within(cell, Want::Fresh, limit).await {
            Err(RefreshError::Timeout) if limit < self.inner.settings.wait_timeout => {
                Err(RefreshError::Queued)
            }
            other => other,
        }
    }

    async fn get(
        &self,
        cell: &Arc<CredentialCell>,
        want: Want<'_>,
    ) -> Result<Arc<Account>, RefreshError> {
        self.get_within(cell, want, self.inner.settings.wait_timeout)
            .await
    }

    async fn get_within(
        &self,
        cell: &Arc<CredentialCell>,
        want: Want<'_>,
        limit: Duration,
    ) -> Result<Arc<Account>, RefreshError> {
        let mut rx = match self.begin(cell, want)? {
            Started::Ready(account) => return Ok(account),
            Started::Waiting(rx) => rx,
        };
        let wait = async { rx.wait_for(Option::is_some).await.map(|r| r.clone()) };
        match tokio::time::timeout(limit, wait).await {
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
        let usable = st.pending.is_none() && fresh(&account, now, expiry_skew(st.lifetime));
        match want {
            Want::Fresh if usable => return Ok(Started::Ready(account)),
            Want::Replace(secret) if usable && account.credential.secret != secret => {
                return Ok(Started::Ready(account))
            }
            Want::Ahead if self.ahead_fresh(&st, now) => return Ok(Started::Ready(account)),
            _ => {}
        }
        let urgent = !matches!(want, Want::Ahead);
        if let Some(rx) = &st.flight {
            if urgent {
                // A request waits for this flight now: its token call goes before proactive ones.
                st.flight_urgent.store(true, Ordering::SeqCst);
            }
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
        if let Some(p) = self.endpoint_pause().filter(|_| st.pending.is_none()) {
            return Err(RefreshError::Backoff {
                until: p.until,
                until_wall: p.until_wall,
                rate_limited: true,
                reason: p.reason,
            });
        }
        let (tx, rx) = watch::channel(None);
        st.flight = Some(rx.clone());
        let flight_urgent = Arc::new(AtomicBool::new(urgent));
        st.flight_urgent = flight_urgent.clone();
        let pending = st.pending.clone();
        drop(st);
        // The guard settles the cell even if the flight's task panics or is dropped.
        let guard = super::guard::FlightGuard::new(self.clone(), cell.clone(), tx);
        let ahead = (!urgent).then(|| self.ahead_flight());
        inner.tasks.spawn(async move {
            let outcome = guard.engine().fly(account, pending, &flight_urgent).await;
            drop(ahead);
            guard.finish(outcome);
        });
        Ok(Started::Waiting(rx))
    }

    /// Records a refresh block in the store so that no process calls the token endpoint for this account before
    /// `until`. Compare-and-set with a few retries; a lost race only means another writer recorded its own block.
    pub(super) fn spawn_persist_block(
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
                let update = AccountUpdate { refresh_block: Patch::Set((until, reason.clone())), ..Default::default() };
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

    /// Writes a ban, re-reading the row on a lost compare-and-set; gives up when the stored secret is no longer the
    /// banned one (someone re-imported the account).
    fn spawn_persist_ban(&self, account: Arc<Account>, message: String) {
        let store = self.inner.store.clone();
        self.inner.tasks.spawn(async move {
            for _ in 0..3 {
                let Ok(Some(stored)) = store.get_account(account.id).await else { return };
                if stored.credential.secret != account.credential.secret || stored.banned.as_ref() == Some(&message) {
                    return;
                }
                let update = AccountUpdate { banned: Patch::Set(message.clone()), last_error: Patch::Set(message.clone()), ..Default::default() };
                match store.update_account(account.id, stored.version, update).await {
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => {
                        tracing::warn!(account = %account.name, error = %e, "could not persist the ban");
                        return;
                    }
                    Ok(_) => return,
                }
            }
        });
    }

    /// Pauses every refresh (here at once, in the store soon; the flight already recorded the pause's floor there).
    fn spawn_pause_endpoint(&self, until: DateTime<Utc>, reason: &str) {
        if !self.inner.settings.endpoint_scope {
            return;
        }
        self.note_pause(until, reason);
        let (engine, reason) = (self.clone(), reason.to_string());
        self.inner
            .tasks
            .spawn(async move { engine.pause_endpoint(until, &reason).await });
    }

    pub(super) fn spawn_persist_reauth(&self, account: Arc<Account>, reason: String) {
        let store = self.inner.store.clone();
        self.inner.tasks.spawn(async move {
            let update = AccountUpdate { needs_reauth: Patch::Set(reason.clone()), last_error: Patch::Set(reason), ..Default::default() };
            if let Err(e) = store.update_account(account.id, account.version, update).await {
                tracing::warn!(account = %account.name, error = %e, "could not persist needs_reauth");
            }
        });
    }

    /// Applies a flight's outcome to the cell (under its lock, together with ending the flight) and returns what the
    /// waiters get.
    pub(super) fn settle(
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
                    if account.credential != st.account.credential {
                        st.lifetime = lifetime_of(&account);
                    }
                    st.account = account.clone();
                }
                Ok(st.account.clone())
            }
            Outcome::RateLimited(retry_after) => {
                st.rate_limit_strikes = st.rate_limit_strikes.saturating_add(1);
                let wait = match retry_after {
                    Some(d) => crate::clock::bounded(d.min(s.max_retry_after)),
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
                // The endpoint limits the caller, not this account: every refresh waits (scope "endpoint").
                self.spawn_pause_endpoint(
                    crate::clock::instant_to_wall(self.inner.clock.as_ref(), until),
                    &reason,
                );
                Err(RefreshError::Backoff {
                    until,
                    until_wall: crate::clock::instant_to_wall(self.inner.clock.as_ref(), until),
                    rate_limited: true,
                    reason,
                })
            }
            Outcome::Transient { attempts, cause } => {
                st.failures = st.failures.saturating_add(1);
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
                st.failures = st.failures.saturating_add(1);
                st.blocked_until = Some(now + s.transient_backoff.delay(st.failures));
                st.block_rate_limited = false;
                let err = RefreshError::Held(cause);
                st.block_reason = err.to_string();
                st.last_error = Some(err.to_string());
                tracing::error!(account = %name, error = %err, "rotated credential not persisted; account held");
                Err(err)
            }
            Outcome::StoreDown(cause) => {
                st.failures = st.failures.saturating_add(1);
                st.blocked_until = Some(now + s.transient_backoff.delay(st.failures));
                st.block_rate_limited = false;
                st.block_reason = format!("store unavailable: {cause}");
                Err(RefreshError::Store(cause))
            }
            Outcome::Blocked { until, reason } => {
                let left = crate::clock::wait_until(self.inner.clock.now(), until);
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
        let id = st.account.id;
        drop(st);
        // A 429's wait and a failure backoff bind every process sharing the store.
        if let (
            Err(RefreshError::Backoff {
                until_wall, reason, ..
            }),
            true,
        ) = (&result, shared_block)
        {
            self.spawn_persist_block(id, *until_wall, reason.clone());
        }
        if let Err(e @ RefreshError::Transient { next_try, .. }) = &result {
            let wall = crate::clock::instant_to_wall(self.inner.clock.as_ref(), *next_try);
            self.spawn_persist_block(id, wall, e.to_string());
        }
        result
    }
}

enum Started {
    Ready(Arc<Account>),
    Waiting(watch::Receiver<FlightResult>),
}
