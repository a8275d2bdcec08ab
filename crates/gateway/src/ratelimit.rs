//! Reading an upstream's rate-limit answer: `retry-after` (seconds or HTTP-date), `retry-after-ms`, the API-key
//! `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-*` headers and the subscription
//! `anthropic-ratelimit-unified-*` windows. Used for both the messages API and the OAuth token endpoint.

use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue};

/// How long the upstream asked us to wait, if it said. `retry-after-ms` wins (it is more precise), then
/// `retry-after` as seconds (integer or decimal), then `retry-after` as an HTTP-date relative to `now`.
/// Always within [0, [`crate::clock::MAX_WAIT`]]: an absurd value is a long wait, never a panic.
pub fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok()) {
        // +inf is an absurdly long wait (clamped); NaN and negatives are no answer.
        if !ms.is_nan() && ms >= 0.0 {
            return Some(crate::clock::duration_secs_f64(ms / 1000.0));
        }
    }
    let value = text("retry-after")?;
    if let Ok(secs) = value.parse::<f64>() {
        return (!secs.is_nan() && secs >= 0.0).then(|| crate::clock::duration_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let at: DateTime<Utc> = at.into();
    Some(crate::clock::wait_until(now, at))
}

/// One `anthropic-ratelimit-unified-{name}-*` window.
#[derive(Debug, Clone, PartialEq)]
pub struct UnifiedWindow {
    /// "5h", "7d", or a model-specific weekly window such as "7d_opus".
    pub name: String,
    pub status: Option<String>,
    pub utilization: Option<f64>,
    pub reset: Option<DateTime<Utc>>,
}

impl UnifiedWindow {
    pub fn rejected(&self) -> bool {
        self.status.as_deref() == Some("rejected")
    }
    /// Whether the window limits the whole account (5-hour and weekly) rather than one model family.
    pub fn account_wide(&self) -> bool {
        // Model-specific weekly windows are named like "7d_opus" / "7d_oi"; everything else limits the whole account.
        !self.name.contains('_')
    }
}

/// The subscription rate-limit state an answer carried.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UnifiedLimits {
    pub status: Option<String>,
    pub reset: Option<DateTime<Utc>>,
    pub windows: Vec<UnifiedWindow>,
}

const UNIFIED: &str = "anthropic-ratelimit-unified-";

/// A reset moment: Unix seconds (integer or decimal) or RFC 3339. Values outside chrono's range are no answer; `as`
/// saturates, so no number panics. Callers clamp the wait it implies with [`crate::clock::wait_until`].
fn epoch(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim();
    match v.parse::<f64>() {
        Ok(secs) if secs.is_finite() => DateTime::from_timestamp(secs as i64, 0),
        Ok(_) => None,
        Err(_) => DateTime::parse_from_rfc3339(v).ok().map(Into::into),
    }
}

const API_KEY_WINDOWS: [&str; 4] = ["requests", "tokens", "input-tokens", "output-tokens"];

/// A header's text, trimmed.
fn text(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Prefix of every rate-limit header.
const RATELIMIT: &str = "anthropic-ratelimit-";

/// The first value of each API-key limit header (`anthropic-ratelimit-{window}-{limit,remaining,reset}`), read in one
/// pass over the answer's headers (no per-name lookups: this runs on every answer).
fn api_key_headers(headers: &HeaderMap) -> [[Option<&HeaderValue>; 3]; 4] {
    let mut found = [[None; 3]; 4];
    for (name, value) in headers {
        let Some(rest) = name.as_str().strip_prefix(RATELIMIT) else {
            continue;
        };
        let Some((window, field)) = rest.rsplit_once('-') else {
            continue;
        };
        let Some(w) = API_KEY_WINDOWS.iter().position(|k| *k == window) else {
            continue;
        };
        let f = match field {
            "limit" => 0,
            "remaining" => 1,
            "reset" => 2,
            _ => continue,
        };
        found[w][f].get_or_insert(value);
    }
    found
}

/// Parses every rate-limit header of an answer (unified windows and API-key limits) into one view; `None` when the
/// answer had none. API-key limits become windows named "requests", "tokens", … with utilization `1 - remaining/limit`.
pub fn limits(headers: &HeaderMap) -> Option<UnifiedLimits> {
    let mut out = unified(headers);
    for (window, [limit, remaining, reset]) in API_KEY_WINDOWS.iter().zip(api_key_headers(headers))
    {
        let limit = text(limit).and_then(|v| v.parse::<f64>().ok());
        let remaining = text(remaining).and_then(|v| v.parse::<f64>().ok());
        let (Some(limit), Some(remaining)) = (limit, remaining) else {
            continue;
        };
        if limit <= 0.0 {
            continue;
        }
        let reset = text(reset)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|d| d.with_timezone(&Utc));
        let utilization = (1.0 - remaining / limit).clamp(0.0, 1.0);
        let status = (remaining <= 0.0)
            .then(|| "rejected".to_string())
            .or(Some("allowed".to_string()));
        out.get_or_insert_with(UnifiedLimits::default)
            .windows
            .push(UnifiedWindow {
                name: (*window).to_string(),
                status,
                utilization: Some(utilization),
                reset,
            });
    }
    out
}

/// Parses the unified headers; `None` when the answer had none.
pub fn unified(headers: &HeaderMap) -> Option<UnifiedLimits> {
    let mut limits = UnifiedLimits::default();
    let mut any = false;
    for (name, value) in headers {
        let Some(rest) = name.as_str().strip_prefix(UNIFIED) else {
            continue;
        };
        let Ok(value) = value.to_str() else { continue };
        any = true;
        match rest {
            "status" => limits.status = Some(value.to_string()),
            "reset" => limits.reset = epoch(value),
            _ => {
                let Some((window, field)) = rest.rsplit_once('-') else {
                    continue;
                };
                if !matches!(field, "status" | "utilization" | "reset") {
                    continue; // e.g. "representative-claim" names no window
                }
                if window.starts_with("overage") || window == "fallback" {
                    continue;
                }
                let idx = match limits.windows.iter().position(|w| w.name == window) {
                    Some(i) => i,
                    None => {
                        limits.windows.push(UnifiedWindow {
                            name: window.to_string(),
                            status: None,
                            utilization: None,
                            reset: None,
                        });
                        limits.windows.len() - 1
                    }
                };
                let w = &mut limits.windows[idx];
                match field {
                    "status" => w.status = Some(value.to_string()),
                    "utilization" => w.utilization = value.trim().parse().ok(),
                    "reset" => w.reset = epoch(value),
                    _ => {}
                }
            }
        }
    }
    any.then_some(limits)
}

impl UnifiedLimits {
    /// When a rejected account-wide window (5h/7d) frees up: the latest reset among them.
    pub fn account_rejected_until(&self) -> Option<DateTime<Utc>> {
        self.windows
            .iter()
            .filter(|w| w.rejected() && w.account_wide())
            .filter_map(|w| w.reset)
            .max()
    }
    /// When a rejected model-specific window frees up.
    pub fn model_rejected_until(&self) -> Option<DateTime<Utc>> {
        self.windows
            .iter()
            .filter(|w| w.rejected() && !w.account_wide())
            .filter_map(|w| w.reset)
            .max()
    }
    /// The highest utilization of the account-wide windows (0..1), for headroom-aware scheduling.
    pub fn utilization(&self) -> Option<f64> {
        self.windows
            .iter()
            .filter(|w| w.account_wide())
            .filter_map(|w| w.utilization)
            .reduce(f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn retry_after_forms() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")]), now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1.5")]), now),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Thu, 01 Jan 2026 00:01:30 GMT")]),
                now
            ),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Wed, 31 Dec 2025 23:00:00 GMT")]),
                now
            ),
            Some(Duration::ZERO)
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "7"), ("retry-after-ms", "2500")]),
                now
            ),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")]), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn unified_windows_latest_rejected_reset_wins() {
        let h = headers(&[
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-status", "rejected"),
            ("anthropic-ratelimit-unified-5h-utilization", "1.0"),
            ("anthropic-ratelimit-unified-5h-reset", "1767225600"),
            ("anthropic-ratelimit-unified-7d-status", "rejected"),
            ("anthropic-ratelimit-unified-7d-utilization", "0.98"),
            ("anthropic-ratelimit-unified-7d-reset", "1767312000"),
            ("anthropic-ratelimit-unified-7d_opus-status", "allowed"),
            ("anthropic-ratelimit-unified-overage-status", "rejected"),
        ]);
        let u = unified(&h).unwrap();
        assert_eq!(u.status.as_deref(), Some("rejected"));
        assert_eq!(u.account_rejected_until().unwrap().timestamp(), 1767312000);
        assert_eq!(u.model_rejected_until(), None);
        assert_eq!(u.utilization(), Some(1.0));
        assert!(unified(&headers(&[("retry-after", "1")])).is_none());
    }

    #[test]
    fn api_key_limits_become_windows() {
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "100"),
            ("anthropic-ratelimit-requests-remaining", "25"),
            ("anthropic-ratelimit-requests-reset", "2026-01-01T00:00:30Z"),
            ("anthropic-ratelimit-tokens-limit", "1000"),
            ("anthropic-ratelimit-tokens-remaining", "900"),
        ]);
        let l = limits(&h).unwrap();
        assert_eq!(l.windows.len(), 2);
        assert!((l.utilization().unwrap() - 0.75).abs() < 1e-9);
        assert_eq!(l.windows[0].reset.unwrap().timestamp(), 1767225630);
        assert!(limits(&HeaderMap::new()).is_none());
        let model = headers(&[
            ("anthropic-ratelimit-unified-7d_opus-status", "rejected"),
            ("anthropic-ratelimit-unified-7d_opus-reset", "1767312000"),
        ]);
        let u = limits(&model).unwrap();
        assert_eq!(u.model_rejected_until().unwrap().timestamp(), 1767312000);
        assert_eq!(u.account_rejected_until(), None);
    }
}
