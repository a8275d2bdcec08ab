//! The engine's timing knobs and the freshness rule.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::account::Account;
use crate::backoff::Backoff;
use crate::config::RefreshConfig;

/// How often a process waiting for another's refresh re-reads the store.
pub(super) const LEASE_POLL: Duration = Duration::from_millis(200);

/// A token this close to expiry is treated as expired on the request path (a request takes time to reach upstream).
pub const EXPIRY_SKEW: Duration = Duration::from_secs(30);

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

/// Whether the account's token is valid for at least `margin` more.
pub fn fresh(account: &Account, now: DateTime<Utc>, margin: Duration) -> bool {
    match account.credential.expires_at {
        None => true,
        Some(exp) => {
            exp - chrono::Duration::from_std(margin).unwrap_or(chrono::Duration::zero()) > now
        }
    }
}
