//! The engine's timing knobs and the freshness rule.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::account::Account;
use crate::backoff::Backoff;
use crate::config::RefreshConfig;

/// How often a process waiting for another's refresh re-reads the store.
pub(super) const LEASE_POLL: Duration = Duration::from_millis(200);

/// The most a token's end is brought forward on the request path (a request takes time to reach upstream).
pub const MAX_EXPIRY_SKEW: Duration = Duration::from_secs(30);

/// Assumed lifetime of a token whose expiry is unknown or implausible.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// How long before its expiry a token that lives `lifetime` counts as expired on the request path: a tenth of its
/// life, at most [`MAX_EXPIRY_SKEW`]. A fixed skew would make a short-lived token count as expired the moment it is
/// issued, so every request would start another exchange.
pub fn expiry_skew(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_EXPIRY_SKEW)
}

/// The proactive lead for a token that lives `lifetime`: `lead`, but at most half its life (so a token just issued
/// is not due at once), times the account's jitter factor.
pub fn proactive_lead(lead: Duration, lifetime: Duration, jitter: f64) -> Duration {
    lead.min(lifetime / 2).mul_f64(jitter.max(0.0))
}

/// The lifetime of the account's current token as far as the row tells: from its last write (the rotation that
/// stored it, when the credential just changed) to its expiry. At least one second.
pub fn lifetime_of(account: &Account) -> Duration {
    match account.credential.expires_at {
        None => DEFAULT_LIFETIME,
        Some(exp) => (exp - account.updated_at)
            .to_std()
            .unwrap_or(DEFAULT_LIFETIME)
            .max(Duration::from_secs(1)),
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
    /// The token-endpoint budget: one call per `call_interval` across every process sharing the store …
    pub call_interval: Duration,
    /// … with at most this many at once after a quiet period.
    pub call_burst: u32,
    /// Whether a token-endpoint 429 pauses every account's refresh (`rate_limit_scope = "endpoint"`).
    pub endpoint_scope: bool,
    /// How often the proactive scan runs (it starts at most what the budget can serve until the next scan).
    pub scan_interval: Duration,
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
            call_interval: Duration::try_from_secs_f64(1.0 / c.max_calls_per_sec)
                .unwrap_or(Duration::from_secs(1)),
            call_burst: c.max_calls_burst.max(1),
            endpoint_scope: c.rate_limit_scope == crate::config::RateLimitScope::Endpoint,
            scan_interval: Duration::from_secs(c.scan_interval_secs.max(1)),
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
