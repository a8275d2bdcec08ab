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

/// The longest wait the gateway ever keeps: every wait, cooldown, block or expiry that comes from outside (an upstream
/// header, a token response, another replica's row) is clamped to this before it meets `Instant` or `DateTime`
/// arithmetic, whose overflow panics. A year is far beyond any real rate-limit window or token lifetime.
pub const MAX_WAIT: Duration = Duration::from_secs(366 * 86_400);

/// `d` clamped to [`MAX_WAIT`].
pub fn bounded(d: Duration) -> Duration {
    d.min(MAX_WAIT)
}

/// The tokio instant `d` from now, with `d` clamped to [`MAX_WAIT`] (never overflows).
pub fn instant_in(d: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + bounded(d)
}

/// How long from `now` until the wall-clock moment `at` (zero if past), clamped to [`MAX_WAIT`].
pub fn wait_until(now: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    bounded((at - now).to_std().unwrap_or_default())
}

/// `now` plus `d` clamped to [`MAX_WAIT`] (never overflows).
pub fn wall_in(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let d = chrono::Duration::from_std(bounded(d)).unwrap_or_default();
    now.checked_add_signed(d)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Converts a tokio instant in the future to the wall-clock moment it denotes (saturating: never panics).
pub fn instant_to_wall(clock: &dyn Clock, at: tokio::time::Instant) -> DateTime<Utc> {
    let left = at.saturating_duration_since(tokio::time::Instant::now());
    wall_in(clock.now(), left)
}

/// Seconds from now until `at`, rounded up, at least 1: the value of a `retry-after` header.
pub fn retry_after_secs(at: tokio::time::Instant) -> u64 {
    let left = at.saturating_duration_since(tokio::time::Instant::now());
    (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1)
}

/// `d` seconds as a duration, clamped to [0, [`MAX_WAIT`]] (NaN is zero): never panics.
pub fn secs(d: f64) -> Duration {
    duration_secs_f64(d)
}

/// Seconds from outside (a header, a JSON number) as a duration in [0, [`MAX_WAIT`]]; NaN and negatives are zero.
/// `Duration::from_secs_f64` panics on values beyond `u64::MAX` seconds, so the clamp comes first.
pub fn duration_secs_f64(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64()))
}
