//! A flight: re-read the store, take the refresh lease (renewed while working), exchange, record the floor of any
//! failure's wait before releasing the lease.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::account::Account;
use crate::oauth::{TokenError, TokenResponse};
use crate::store::Patch;
use crate::store::{AccountUpdate, Fence};

use super::journal::Doubt;

use super::settings::LEASE_POLL;
use super::*;

/// What a failed call of the token endpoint leads to.
enum AfterFailure {
    /// The flight ends with this outcome.
    Done(Outcome),
    /// The answer was lost: the same token is sent once more at once.
    SendAgain,
    /// A transient failure: another attempt after a backoff, while attempts remain.
    Transient(TokenError),
}

// === impl RefreshEngine: the lease protocol and the exchange ===

impl RefreshEngine {
    /// The flight itself. Never cancelled by callers; bounded by `max_attempts` calls of `call_timeout` each.
    pub(super) async fn fly(
        &self,
        started_from: Arc<Account>,
        pending: Option<TokenResponse>,
        urgent: &AtomicBool,
    ) -> Outcome {
        let id = started_from.id;
        // Re-read the stored row: someone (the CLI, another replica) may have rotated the token since we loaded it.
        let stored = match self.reread(id).await {
            Ok(a) => a,
            Err(o) => return o,
        };
        // A rotation this process obtained earlier (even before a restart) and never stored is written, not re-fetched.
        let pending = pending.or_else(|| self.journal_pending(&stored));
        let (fence, stored) = match self
            .take_lease(&started_from, stored, pending.is_some())
            .await
        {
            Ok(held) => held,
            Err(o) => return o,
        };
        let work = async {
            match pending {
                // A rotation we could not persist before: persist it now, do not call the endpoint.
                Some(tokens) => self.persist_journaled(stored, tokens, &fence).await,
                None => match self.settled_elsewhere(&started_from, &stored) {
                    Some(done) => done,
                    None => self.exchange(stored, &fence, urgent).await,
                },
            }
        };
        let outcome = self.renewing_lease(id, &fence, work).await;
        self.record_floor(id, &fence, &outcome).await;
        if matches!(outcome, Outcome::Held { .. }) {
            // Other replicas must not send the refresh token our unsaved rotation replaced: keep the lease.
            self.spawn_keep_held(id, fence);
        } else if let Err(e) = self.inner.store.release_refresh_lease(id, &fence).await {
            tracing::debug!(error = %e, "could not release the refresh lease; it expires on its own");
        }
        outcome
    }

    async fn reread(&self, id: crate::account::AccountId) -> Result<Account, Outcome> {
        match self.inner.store.get_account(id).await {
            Ok(Some(a)) => Ok(a),
            Ok(None) => Err(Outcome::Removed),
            Err(e) => Err(Outcome::StoreDown(e.to_string())),
        }
    }

    /// One holder at a time across every process sharing the store: takes the account's refresh lease, or waits
    /// (polling the store) while another holder works — whose result, seen in the stored row, may settle this flight.
    /// Returns the fence and the row as read once the lease is ours.
    async fn take_lease(
        &self,
        started_from: &Account,
        mut stored: Account,
        has_pending: bool,
    ) -> Result<(Fence, Account), Outcome> {
        let inner = &self.inner;
        let id = started_from.id;
        let give_up = Instant::now() + inner.settings.lease_ttl.saturating_mul(2);
        let fence = loop {
            if !has_pending {
                if let Some(done) = self.settled_elsewhere(started_from, &stored) {
                    return Err(done);
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
                    stored = self.reread(id).await?;
                }
                Ok(None) => {
                    return Err(Outcome::Transient {
                        attempts: 0,
                        cause: "another process held the refresh lease for too long".into(),
                    })
                }
                Err(e) => return Err(Outcome::StoreDown(e.to_string())),
            }
        };
        // The previous holder may have finished just before we took the lease.
        match self.reread(id).await {
            Ok(stored) => Ok((fence, stored)),
            Err(o) => {
                let _ = inner.store.release_refresh_lease(id, &fence).await;
                Err(o)
            }
        }
    }

    /// Runs `work` while renewing the lease every third of its time-to-live: a live holder never loses it to a slow
    /// endpoint or retries; only a holder that died stops renewing and is taken over after `lease_ttl`.
    async fn renewing_lease(
        &self,
        id: crate::account::AccountId,
        fence: &Fence,
        work: impl std::future::Future<Output = Outcome>,
    ) -> Outcome {
        let inner = &self.inner;
        let renew = async {
            let every = inner.settings.lease_ttl / 3;
            loop {
                tokio::time::sleep(every).await;
                match inner
                    .store
                    .renew_refresh_lease(id, fence, inner.settings.lease_ttl)
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
        tokio::select! {
            outcome = work => outcome,
            () = renew => unreachable_outcome(),
        }
    }

    /// Records the least wait a failure implies before the lease is given up, so no other process can slip a call in
    /// between (the exact, possibly longer, wait is written when the outcome settles).
    async fn record_floor(&self, id: crate::account::AccountId, fence: &Fence, outcome: &Outcome) {
        let inner = &self.inner;
        let floor = match outcome {
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
        let Some((wait, reason)) = floor else { return };
        let until = crate::clock::wall_in(inner.clock.now(), wait);
        if matches!(outcome, Outcome::RateLimited(_)) {
            // Scope "endpoint": every refresh of every process waits, recorded before the lease is released.
            self.pause_endpoint(until, reason).await;
        }
        if let Ok(Some(a)) = inner.store.get_account(id).await {
            let update = AccountUpdate {
                refresh_block: Patch::Set((until, reason.to_string())),
                ..Default::default()
            };
            if let Err(e) = inner
                .store
                .update_account_fenced(id, a.version, fence, update)
                .await
            {
                tracing::debug!(error = %e, "could not record the refresh block before releasing the lease");
            }
        }
    }

    pub(super) fn settled_elsewhere(
        &self,
        started_from: &Account,
        stored: &Account,
    ) -> Option<Outcome> {
        let now = self.inner.clock.now();
        if stored.needs_reauth.is_some() && stored.version >= started_from.version {
            return Some(Outcome::NeedsReauth(
                stored.needs_reauth.clone().unwrap_or_default(),
            ));
        }
        if stored.credential.secret != started_from.credential.secret
            && fresh(stored, now, expiry_skew(lifetime_of(stored)))
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
    ///
    /// The lost-answer rule: a refresh token sent without an answer seen (lost, timed out, an unparsable 200) is sent
    /// at most once more, ever — the doubt is journaled, so it outlives this flight and the process. If that one more
    /// send gets no usable answer either (lost again, 5xx), the token is never sent again: the account needs re-auth.
    pub(super) async fn exchange(
        &self,
        stored: Account,
        fence: &Fence,
        urgent: &AtomicBool,
    ) -> Outcome {
        let inner = &self.inner;
        let Some(refresh_token) = stored.credential.refresh_token.clone() else {
            return Outcome::NeedsReauth("no refresh token stored".into());
        };
        let mut attempts = 0u32;
        loop {
            let in_doubt = inner
                .journal
                .doubt(stored.id)
                .filter(|d| d.refresh_token == refresh_token);
            if in_doubt.as_ref().is_some_and(|d| d.retried) {
                return self.give_up_in_doubt(&stored, "a previous try").await;
            }
            // Every call, retries included, takes its turn from the token endpoint's budget.
            if let Err(no_turn) = self.take_turn(urgent).await {
                return no_turn.into();
            }
            if in_doubt.is_some() {
                self.mark_doubt(stored.id, &refresh_token, true).await;
            }
            attempts += 1;
            let err = match self.call(&stored, &refresh_token, attempts).await {
                Ok(tokens) => return self.keep_rotation(stored, tokens, fence).await,
                Err(e) => e,
            };
            let err = match self
                .after_failure(&stored, &refresh_token, err, in_doubt.is_some())
                .await
            {
                AfterFailure::Done(outcome) => return outcome,
                AfterFailure::SendAgain => continue,
                AfterFailure::Transient(err) => err,
            };
            if attempts >= inner.settings.max_attempts {
                return Outcome::Transient {
                    attempts,
                    cause: err.to_string(),
                };
            }
            tokio::time::sleep(inner.settings.transient_backoff.delay(attempts)).await;
        }
    }

    /// One call of the token endpoint under `call_timeout`, counted and logged by outcome.
    async fn call(
        &self,
        stored: &Account,
        refresh_token: &str,
        attempt: u32,
    ) -> Result<TokenResponse, TokenError> {
        let inner = &self.inner;
        let result = match tokio::time::timeout(
            inner.settings.call_timeout,
            inner.endpoint.refresh(refresh_token),
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
        tracing::info!(account = %stored.name, attempt, outcome, "token refresh attempt");
        result
    }

    /// What a failed call leads to, under the lost-answer rule (`in_doubt`: this send was the one more send).
    async fn after_failure(
        &self,
        stored: &Account,
        refresh_token: &str,
        err: TokenError,
        in_doubt: bool,
    ) -> AfterFailure {
        match err {
            // A 429 or a refused connection processed nothing: the one more send is still unused.
            TokenError::RateLimited { retry_after } => {
                if in_doubt {
                    self.mark_doubt(stored.id, refresh_token, false).await;
                }
                AfterFailure::Done(Outcome::RateLimited(retry_after))
            }
            TokenError::Rejected { .. } => {
                AfterFailure::Done(self.rejected(stored, refresh_token, &err, in_doubt).await)
            }
            TokenError::Connect(_) if in_doubt => {
                self.mark_doubt(stored.id, refresh_token, false).await;
                AfterFailure::Transient(err)
            }
            e if in_doubt => {
                AfterFailure::Done(self.give_up_in_doubt(stored, &e.to_string()).await)
            }
            e if e.outcome_unknown() => {
                // The endpoint may have rotated the token without us seeing the answer. The old token is tried
                // exactly once more: if it was not rotated this simply succeeds.
                tracing::warn!(account = %stored.name, error = %e, "refresh answer lost; retrying once with the same token");
                self.mark_doubt(stored.id, refresh_token, false).await;
                AfterFailure::SendAgain
            }
            e => AfterFailure::Transient(e),
        }
    }

    async fn mark_doubt(&self, id: crate::account::AccountId, refresh_token: &str, retried: bool) {
        let doubt = Doubt {
            refresh_token: refresh_token.to_string(),
            retried,
        };
        self.inner.journal.record_doubt(id, Some(doubt)).await;
    }

    /// The one more send of a token in doubt got no usable answer: never send it again.
    async fn give_up_in_doubt(&self, stored: &Account, last: &str) -> Outcome {
        let reason = format!("the token endpoint's answer to a refresh was lost, and the one more try with the same refresh token got no usable answer either ({last}); the outcome is unknown and the token is not sent again: log in again or re-import the account");
        self.persist_reauth(stored, &reason).await;
        Outcome::NeedsReauth(reason)
    }

    /// The endpoint refused the refresh token. Someone may have rotated it under us: only a credential that is still
    /// ours is given up.
    async fn rejected(
        &self,
        stored: &Account,
        refresh_token: &str,
        err: &TokenError,
        lost_before: bool,
    ) -> Outcome {
        self.inner.journal.record_doubt(stored.id, None).await;
        match self.inner.store.get_account(stored.id).await {
            Ok(Some(now_stored))
                if now_stored.credential.refresh_token.as_deref() != Some(refresh_token) =>
            {
                tracing::info!(account = %stored.name, "refresh token rotated elsewhere; adopting the stored one");
                Outcome::Refreshed(Arc::new(now_stored))
            }
            Ok(Some(now_stored)) => {
                let reason = if lost_before {
                    format!("the token endpoint's answer to a refresh was lost, and the refresh token was then refused ({err}); the outcome of that refresh is unknown: log in again or re-import the account")
                } else {
                    format!("the refresh token was refused ({err}): log in again or re-import the account")
                };
                self.persist_reauth(&now_stored, &reason).await;
                Outcome::NeedsReauth(reason)
            }
            Ok(None) => Outcome::Removed,
            Err(e) => Outcome::StoreDown(e.to_string()),
        }
    }

    /// Marks the account as needing re-auth in the store (compare-and-set on the version it was judged at).
    async fn persist_reauth(&self, judged: &Account, reason: &str) {
        let update = AccountUpdate {
            needs_reauth: crate::store::Patch::Set(reason.to_string()),
            last_error: crate::store::Patch::Set(reason.to_string()),
            ..Default::default()
        };
        if let Err(e) = self
            .inner
            .store
            .update_account(judged.id, judged.version, update)
            .await
        {
            tracing::warn!(account = %judged.name, error = %e, "could not persist needs_reauth");
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

#[derive(Debug)]
pub(super) enum Outcome {
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
