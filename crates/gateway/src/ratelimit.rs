//! Reading an upstream's rate-limit answer: `retry-after` (seconds or HTTP-date), `retry-after-ms`, the API-key
//! `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-*` headers and the subscription
//! `anthropic-ratelimit-unified-*` windows. Used for both the messages API and the OAuth token endpoint.

use std::borrow::Cow;
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

/// One `anthropic-ratelimit-unified-{name}-*` window (or one API-key limit). Names and statuses every answer carries
/// are static text ([`known`]): reading an answer allocates for none of them.
#[derive(Debug, Clone, PartialEq)]
pub struct UnifiedWindow {
    /// "5h", "7d", or a model-specific weekly window such as "7d_opus"; or an API-key window ("requests", …).
    pub name: Cow<'static, str>,
    pub status: Option<Cow<'static, str>>,
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
    pub status: Option<Cow<'static, str>>,
    pub reset: Option<DateTime<Utc>>,
    pub windows: Vec<UnifiedWindow>,
}

/// Window names and statuses answers carry, kept as static text.
const KNOWN: [&str; 9] = [
    "5h",
    "7d",
    "7d_opus",
    "7d_sonnet",
    "7d_oauth_apps",
    "allowed",
    "allowed_warning",
    "rejected",
    "queueing_soft",
];

/// `text` as static text when it is one of [`KNOWN`] (or an API-key window name), else a copy.
fn known(text: &str) -> Cow<'static, str> {
    match KNOWN.iter().chain(&API_KEY_WINDOWS).find(|k| **k == text) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(text.to_string()),
    }
}

/// A reset moment: Unix seconds (integer or decimal) or RFC 3339. Values outside chrono's range are no answer; `as`
/// saturates, so no number panics. Callers clamp the wait it implies with [`crate::clock::wait_until`].
fn epoch(v: &str) -> Option<DateTime<Utc>> {
    let v = v.trim_ascii();
    match v.parse::<f64>() {
        Ok(secs) if secs.is_finite() => DateTime::from_timestamp(secs as i64, 0),
        Ok(_) => None,
        Err(_) => DateTime::parse_from_rfc3339(v).ok().map(Into::into),
    }
}

const API_KEY_WINDOWS: [&str; 4] = ["requests", "tokens", "input-tokens", "output-tokens"];

/// A header's text, trimmed. (Header text is visible ASCII, space and tab: ASCII trimming trims what `str::trim`
/// would.)
fn text(v: Option<&HeaderValue>) -> Option<&str> {
    v.and_then(|v| v.to_str().ok()).map(str::trim_ascii)
}

/// Prefix of every rate-limit header.
const RATELIMIT: &str = "anthropic-ratelimit-";

/// The first value of each API-key limit header (`anthropic-ratelimit-{window}-{limit,remaining,reset}`), by window.
type ApiKeyHeaders<'h> = [[Option<&'h HeaderValue>; 3]; 4];

/// Parses every rate-limit header of an answer (unified windows and API-key limits) into one view; `None` when the
/// answer had none. API-key limits become windows named "requests", "tokens", … with utilization `1 - remaining/limit`,
/// after the unified windows. One pass over the headers, no per-name lookups: this runs on every answer.
pub fn limits(headers: &HeaderMap) -> Option<UnifiedLimits> {
    let mut unified = UnifiedLimits::default();
    let mut any_unified = false;
    let mut api_key: ApiKeyHeaders = [[None; 3]; 4];
    for (name, value) in headers {
        let Some(rest) = name.as_str().strip_prefix(RATELIMIT) else {
            continue;
        };
        if let Some(field) = rest.strip_prefix("unified-") {
            let Ok(value) = value.to_str() else { continue };
            any_unified = true;
            unified.read(field, value);
        } else if let Some((w, f)) = api_key_field(rest) {
            api_key[w][f].get_or_insert(value);
        }
    }
    let mut out = any_unified.then_some(unified);
    for (window, [limit, remaining, reset]) in API_KEY_WINDOWS.iter().zip(api_key) {
        if let Some(w) = api_key_window(window, limit, remaining, reset) {
            out.get_or_insert_with(UnifiedLimits::default).push(w);
        }
    }
    out
}

/// Which API-key window (in [`API_KEY_WINDOWS`]) and field (limit, remaining, reset) a rate-limit header names, from
/// the rest of its name.
fn api_key_field(rest: &str) -> Option<(usize, usize)> {
    Some(match rest {
        "requests-limit" => (0, 0),
        "requests-remaining" => (0, 1),
        "requests-reset" => (0, 2),
        "tokens-limit" => (1, 0),
        "tokens-remaining" => (1, 1),
        "tokens-reset" => (1, 2),
        "input-tokens-limit" => (2, 0),
        "input-tokens-remaining" => (2, 1),
        "input-tokens-reset" => (2, 2),
        "output-tokens-limit" => (3, 0),
        "output-tokens-remaining" => (3, 1),
        "output-tokens-reset" => (3, 2),
        _ => return None,
    })
}

/// One API-key window, when its limit (positive) and remaining count are both given.
fn api_key_window(
    window: &'static str,
    limit: Option<&HeaderValue>,
    remaining: Option<&HeaderValue>,
    reset: Option<&HeaderValue>,
) -> Option<UnifiedWindow> {
    let limit = limit.and_then(count)?;
    let remaining = remaining.and_then(count)?;
    if limit <= 0.0 {
        return None;
    }
    let reset = reset.and_then(rfc3339);
    let status = if remaining <= 0.0 {
        "rejected"
    } else {
        "allowed"
    };
    Some(UnifiedWindow {
        name: Cow::Borrowed(window),
        status: Some(Cow::Borrowed(status)),
        utilization: Some((1.0 - remaining / limit).clamp(0.0, 1.0)),
        reset,
    })
}

/// An RFC 3339 moment, from a header's trimmed text. The form every answer carries (`2026-12-01T16:33:30Z`) is read
/// directly from the bytes (they are all visible ASCII, so the text is them), the same moment chrono reads from it; any
/// other text (offsets, fractions, leap seconds, impossible dates) goes to chrono.
fn rfc3339(v: &HeaderValue) -> Option<DateTime<Utc>> {
    zulu_seconds(v.as_bytes().trim_ascii()).or_else(|| {
        DateTime::parse_from_rfc3339(text(Some(v))?)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` exactly, when it names a real date and time.
fn zulu_seconds(b: &[u8]) -> Option<DateTime<Utc>> {
    if b.len() != 20 || [b[4], b[7], b[10], b[13], b[16], b[19]] != *b"--T::Z" {
        return None;
    }
    let n = |at: usize, len: usize| -> Option<u32> {
        b[at..at + len].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(n(0, 4)?).ok()?, n(5, 2)?, n(8, 2)?)?;
    Some(date.and_hms_opt(n(11, 2)?, n(14, 2)?, n(17, 2)?)?.and_utc())
}

/// A limit or a remaining count, as `f64` text (trimmed): the integers every answer carries are read as integers from
/// the bytes (digits are visible ASCII, so the text is them; below 10^15 they are exact in an `f64`, so the value is
/// the same), anything else as a float.
fn count(v: &HeaderValue) -> Option<f64> {
    let b = v.as_bytes().trim_ascii();
    if !b.is_empty() && b.len() <= 15 {
        let digits = b.iter().try_fold(0u64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0'))
        });
        if let Some(n) = digits {
            return Some(n as f64);
        }
    }
    text(Some(v))?.parse().ok()
}

impl UnifiedLimits {
    /// Reads one `anthropic-ratelimit-unified-{field}` header: the overall status or reset, or one field of a named
    /// window (kept in the order the windows first appear). Overage, fallback and unknown fields name no window.
    fn read(&mut self, field: &str, value: &str) {
        match field {
            "status" => self.status = Some(known(value)),
            "reset" => self.reset = epoch(value),
            _ => {
                let Some((window, part)) = field.rsplit_once('-') else {
                    return;
                };
                if !matches!(part, "status" | "utilization" | "reset") {
                    return; // e.g. "representative-claim" names no window
                }
                if window.starts_with("overage") || window == "fallback" {
                    return;
                }
                let w = self.window(window);
                match part {
                    "status" => w.status = Some(known(value)),
                    "utilization" => w.utilization = value.trim_ascii().parse().ok(),
                    _ => w.reset = epoch(value),
                }
            }
        }
    }

    /// The window named `name`, added (empty) if new.
    fn window(&mut self, name: &str) -> &mut UnifiedWindow {
        let i = match self.windows.iter().position(|w| w.name == name) {
            Some(i) => i,
            None => {
                self.push(UnifiedWindow {
                    name: known(name),
                    status: None,
                    utilization: None,
                    reset: None,
                });
                self.windows.len() - 1
            }
        };
        &mut self.windows[i]
    }

    /// Adds a window; the first one makes room for as many as an answer usually has (four), in one allocation.
    fn push(&mut self, w: UnifiedWindow) {
        if self.windows.capacity() == 0 {
            self.windows.reserve_exact(4);
        }
        self.windows.push(w);
    }

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
mod tests;
