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
//! - The token endpoint is one resource for all accounts: every call takes a turn from a budget shared through the
//!   store (`refresh/budget.rs`), requests' refreshes before proactive ones, and a 429 pauses every refresh
//!   (`rate_limit_scope = "endpoint"`).
//! - A 429 blocks every path (request, proactive, admin) until its Retry-After (or a jittered backoff) has passed: the
//!   block is checked under the same lock that starts flights.

mod budget;
mod cell;
mod engine;
mod flight;
mod guard;
mod hold;
pub mod journal;
mod persist;
mod settings;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

pub use cell::{CredentialCell, CredentialState};
pub use engine::RefreshEngine;
pub use journal::Journal;
pub use settings::{expiry_skew, fresh, lifetime_of, proactive_lead, RefreshSettings};

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
    /// The refresh keeps waiting for its turn at the token endpoint; another account may serve meanwhile.
    #[error("token refresh is waiting for its turn at the token endpoint")]
    Queued,
    #[error("account was removed")]
    Removed,
}

impl RefreshError {
    /// Why an account's credential cannot be had, as the client sees it when no other account can serve: a wait with
    /// `retry-after` when one ends at a known time, otherwise the pool's own state (never a 429 for an account that
    /// needs a login: waiting would not help).
    pub fn to_gateway_error(&self) -> crate::error::GatewayError {
        let e = self;
        let message = e.to_string();
        match e {
            Self::Backoff { until, .. }
            | Self::Transient {
                next_try: until, ..
            } => crate::error::GatewayError::RateLimited {
                message,
                retry_after_secs: crate::clock::retry_after_secs(*until),
            },
            Self::Held(_) | Self::Store(_) | Self::Timeout | Self::Queued => {
                crate::error::GatewayError::Unavailable {
                    message,
                    retry_after_secs: Some(5),
                }
            }
            Self::NeedsReauth(_) | Self::Removed => crate::error::GatewayError::NoAccount(message),
        }
    }

    /// When this account may be usable again, if that is known.
    pub fn retry_at(&self) -> Option<Instant> {
        match self {
            RefreshError::Backoff { until, .. } => Some(*until),
            RefreshError::Transient { next_try, .. } => Some(*next_try),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
