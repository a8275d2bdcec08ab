//! Time behind one injectable seam.
//!
//! Cooldowns and backoffs use `tokio::time::Instant` directly, so paused-time tests drive them. Wall-clock time
//! (token expiry, anything persisted or shown) comes from a [`Clock`], so tests can move it together with tokio's
//! paused clock via [`TokioClock`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

pub type SharedClock = Arc<dyn Clock>;

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        system_now()
    }
}

/// The system's wall clock, for the few places that stamp records with real time and have no [`Clock`] (the store's
/// `created_at`/`updated_at`, test set-up). Everything that decides by time takes a `Clock`.
#[allow(clippy::disallowed_methods)] // the one sanctioned read of the system wall clock
pub fn system_now() -> DateTime<Utc> {
    Utc::now()
}

#[cfg(test)]
/// Wall-clock time that follows tokio's clock from a fixed start: with `tokio::time::pause()` it advances only when
/// the test advances time.
#[derive(Debug, Clone)]
pub struct TokioClock {
    start_wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

#[cfg(test)]
impl TokioClock {
    pub fn starting_at(start_wall: DateTime<Utc>) -> Self {
        TokioClock {
            start_wall,
            start: tokio::time::Instant::now(),
        }
    }
}

#[cfg(test)]
impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().duration_since(self.start);
        self.start_wall + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
    }
}

/// Milliseconds since the Unix epoch, the storage form of every persisted timestamp.
pub fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// RFC 3339 with second precision and `Z`, the form of every timestamp the admin API shows.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Converts a tokio instant in the future to the wall-clock moment it denotes.
pub fn instant_to_wall(clock: &dyn Clock, at: tokio::time::Instant) -> DateTime<Utc> {
    let left = at.saturating_duration_since(tokio::time::Instant::now());
    clock.now() + chrono::Duration::from_std(left).unwrap_or(chrono::Duration::MAX)
}

/// Seconds from now until `at`, rounded up, at least 1: the value of a `retry-after` header.
pub fn retry_after_secs(at: tokio::time::Instant) -> u64 {
    let left = at.saturating_duration_since(tokio::time::Instant::now());
    (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
}

pub fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d.max(0.0))
}
