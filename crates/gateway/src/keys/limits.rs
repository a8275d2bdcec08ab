//! A key's limits and the arithmetic of their windows: which models and accounts it may use, requests per minute
//! (a sliding minute estimated from two fixed ones), concurrent requests, tokens per UTC day, spend per UTC month.
//!
//! Promise: a decision depends only on the counts given and the time given, so replicas that see the same counts decide
//! alike, and every refusal names the limit and when it resets.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::patch::Patch;

/// What a key may do. Empty lists allow everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyLimits {
    /// Model globs (`claude-sonnet-*`); `*` matches any run of characters.
    pub models: Vec<String>,
    /// Account-name globs the key may be served by, so one team's key cannot drain another team's accounts.
    pub accounts: Vec<String>,
    pub rpm: Option<u64>,
    pub concurrency: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub usd_per_month: Option<f64>,
}

/// A change to limits: absent keeps, `null` clears, a value sets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsPatch {
    pub models: Option<Vec<String>>,
    pub accounts: Option<Vec<String>>,
    pub rpm: Patch<u64>,
    pub concurrency: Patch<u64>,
    pub tokens_per_day: Patch<u64>,
    pub usd_per_month: Patch<f64>,
}

impl LimitsPatch {
    /// Applies the patch; on a validation error `limits` is left as it was.
    pub fn apply(self, limits: &mut KeyLimits) -> Result<(), String> {
        let mut l = limits.clone();
        if let Some(v) = self.models {
            l.models = v;
        }
        if let Some(v) = self.accounts {
            l.accounts = v;
        }
        self.rpm.apply(&mut l.rpm);
        self.concurrency.apply(&mut l.concurrency);
        self.tokens_per_day.apply(&mut l.tokens_per_day);
        self.usd_per_month.apply(&mut l.usd_per_month);
        l.validate()?;
        *limits = l;
        Ok(())
    }
}

impl KeyLimits {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(usd) = self.usd_per_month {
            if !usd.is_finite() || usd < 0.0 {
                return Err(format!("usd_per_month {usd}: must be a number >= 0"));
            }
        }
        if self
            .models
            .iter()
            .chain(&self.accounts)
            .any(|g| g.trim().is_empty())
        {
            return Err("model and account globs must not be empty".into());
        }
        Ok(())
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|g| glob(g, model))
    }

    pub fn allows_account(&self, name: &str) -> bool {
        self.accounts.is_empty() || self.accounts.iter().any(|g| glob(g, name))
    }

    /// The monthly budget in nano-USD.
    pub fn nanos_per_month(&self) -> Option<i64> {
        // Budgets are dollars and cents: rounding to a nano-dollar is exact for them.
        self.usd_per_month.map(|usd| (usd * 1e9).round() as i64)
    }
}

/// `*` matches any run of characters (also none); everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

// === windows ===

pub const MINUTE_MS: i64 = 60_000;

/// Start of the fixed minute containing `now`.
pub fn minute_start(now: DateTime<Utc>) -> i64 {
    now.timestamp_millis().div_euclid(MINUTE_MS) * MINUTE_MS
}

pub fn day_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// The calendar's start of `now`'s month (what `tenants::ring` computes by arithmetic is checked against it).
#[cfg(test)]
pub fn month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

pub fn next_month_start(now: DateTime<Utc>) -> DateTime<Utc> {
    let (y, m) = if now.month() == 12 {
        (now.year() + 1, 1)
    } else {
        (now.year(), now.month() + 1)
    };
    Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// Requests in the sliding minute ending at `now`: all of the current fixed minute plus the previous one weighted by
/// how much of it still lies inside the sliding minute. Never lower than the current minute's count.
pub fn sliding_count(prev: u64, current: u64, now: DateTime<Utc>) -> f64 {
    let into = (now.timestamp_millis() - minute_start(now)) as f64 / MINUTE_MS as f64;
    prev as f64 * (1.0 - into) + current as f64
}

/// Seconds until the sliding count falls below `limit` with no new requests (at least 1).
pub fn rpm_retry_after(prev: u64, current: u64, limit: u64, now: DateTime<Utc>) -> u64 {
    let into_ms = now.timestamp_millis() - minute_start(now);
    let to_next_ms = MINUTE_MS - into_ms;
    let wait_ms = if current >= limit {
        // The current minute alone is full: wait for it to become the previous one and slide out far enough.
        let frac_needed = 1.0 - (limit as f64 - 0.5) / current as f64;
        to_next_ms + (frac_needed.max(0.0) * MINUTE_MS as f64) as i64
    } else if prev > 0 {
        // prev × (1 − f) + current < limit  ⇔  f > 1 − (limit − current) / prev
        let f_needed = 1.0 - (limit - current) as f64 / prev as f64;
        ((f_needed * MINUTE_MS as f64) as i64 - into_ms).max(0)
    } else {
        0
    };
    u64::try_from(wait_ms.max(0))
        .unwrap_or(0)
        .div_ceil(1000)
        .max(1)
}

pub fn secs_until(now: DateTime<Utc>, at: DateTime<Utc>) -> u64 {
    u64::try_from((at - now).num_milliseconds().max(0))
        .unwrap_or(0)
        .div_ceil(1000)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob("claude-sonnet-*", "claude-sonnet-4-5-20250929"));
        assert!(glob("*haiku*", "claude-haiku-4-5"));
        assert!(glob("claude-opus-4-5", "claude-opus-4-5"));
        assert!(!glob("claude-sonnet-*", "claude-opus-4-5"));
        assert!(!glob("claude-opus-4-5", "claude-opus-4-5-x"));
        assert!(glob("*", ""));
    }

    #[test]
    fn a_full_previous_minute_still_counts_at_the_boundary() {
        let t = at("2026-01-01T00:01:00Z");
        assert_eq!(sliding_count(5, 0, t), 5.0);
        let half = at("2026-01-01T00:01:30Z");
        assert_eq!(sliding_count(5, 1, half), 3.5);
    }

    #[test]
    fn retry_after_is_when_the_sliding_count_falls_below_the_limit() {
        // 5 of 5 in the current minute, 10 s into it: the minute ends in 50 s, then 10 % of it must slide out.
        let t = at("2026-01-01T00:00:10Z");
        let wait = rpm_retry_after(0, 5, 5, t);
        assert_eq!(wait, 56);
        let later = t + chrono::Duration::seconds(i64::try_from(wait).unwrap());
        assert!(sliding_count(5, 0, later) < 5.0);
        // 5 in the previous minute, 0 now, 6 s in: 5 × (1 − f) < 5 holds as soon as f > 0.
        let t = at("2026-01-01T00:01:06Z");
        assert_eq!(rpm_retry_after(5, 0, 5, t), 1);
    }

    #[test]
    fn months_and_days_reset_at_utc_boundaries() {
        let t = at("2026-12-31T23:59:59Z");
        assert_eq!(next_month_start(t), at("2027-01-01T00:00:00Z"));
        assert_eq!(month_start(t), at("2026-12-01T00:00:00Z"));
        assert_eq!(day_start(t), at("2026-12-31T00:00:00Z"));
        assert_eq!(secs_until(t, at("2027-01-01T00:00:00Z")), 1);
    }

    #[test]
    fn patches_validate_budgets() {
        let mut l = KeyLimits::default();
        let p: LimitsPatch = serde_json::from_str(r#"{"usd_per_month":-1}"#).unwrap();
        assert!(p.apply(&mut l).is_err());
        let p: LimitsPatch = serde_json::from_str(r#"{"rpm":5,"models":["claude-*"]}"#).unwrap();
        p.apply(&mut l).unwrap();
        assert_eq!(l.rpm, Some(5));
        assert!(l.allows_model("claude-x") && !l.allows_model("gpt-4"));
    }
}
