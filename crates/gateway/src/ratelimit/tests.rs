//! Rate-limit header reading: examples, and the one-pass reading checked against the reading it replaced.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use proptest::prelude::*;

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
    let u = limits(&h).unwrap();
    assert_eq!(u.status.as_deref(), Some("rejected"));
    assert_eq!(u.account_rejected_until().unwrap().timestamp(), 1767312000);
    assert_eq!(u.model_rejected_until(), None);
    assert_eq!(u.utilization(), Some(1.0));
    assert!(limits(&headers(&[("retry-after", "1")])).is_none());
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

/// The reading before it became one pass (two passes over the headers, a split per name), kept to compare against.
mod before {
    use super::super::*;

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
        for (window, [limit, remaining, reset]) in
            API_KEY_WINDOWS.iter().zip(api_key_headers(headers))
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
                    name: (*window).to_string().into(),
                    status: status.map(Into::into),
                    utilization: Some(utilization),
                    reset,
                });
        }
        out
    }

    /// Parses the unified headers; `None` when the answer had none.
    fn unified(headers: &HeaderMap) -> Option<UnifiedLimits> {
        let mut limits = UnifiedLimits::default();
        let mut any = false;
        for (name, value) in headers {
            let Some(rest) = name.as_str().strip_prefix("anthropic-ratelimit-unified-") else {
                continue;
            };
            let Ok(value) = value.to_str() else { continue };
            any = true;
            match rest {
                "status" => limits.status = Some(value.to_string().into()),
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
                                name: window.to_string().into(),
                                status: None,
                                utilization: None,
                                reset: None,
                            });
                            limits.windows.len() - 1
                        }
                    };
                    let w = &mut limits.windows[idx];
                    match field {
                        "status" => w.status = Some(value.to_string().into()),
                        "utilization" => w.utilization = value.trim().parse().ok(),
                        "reset" => w.reset = epoch(value),
                        _ => {}
                    }
                }
            }
        }
        any.then_some(limits)
    }
}

fn ratelimit_name() -> impl Strategy<Value = String> {
    let window = prop::sample::select(vec![
        "requests",
        "tokens",
        "input-tokens",
        "output-tokens",
        "unified-5h",
        "unified-7d",
        "unified-7d_opus",
        "unified-overage",
        "unified",
        "unified-fallback",
        "images",
        "",
    ]);
    let field = prop::sample::select(vec![
        "limit",
        "remaining",
        "reset",
        "status",
        "utilization",
        "x",
        "",
    ]);
    prop_oneof![
        4 => (window, field).prop_map(|(w, f)| format!("anthropic-ratelimit-{w}-{f}")),
        1 => "anthropic-ratelimit-[a-z0-9_-]{0,20}",
        1 => prop::sample::select(vec!["content-type", "retry-after", "anthropic-ratelimit-unified-status"]).prop_map(str::to_string),
    ]
}

fn ratelimit_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..4).prop_map(|n| n.to_string()),
        (0u64..5_000_000).prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "0",
            "-1",
            "1.5",
            " 40 ",
            "007",
            "1e3",
            "NaN",
            "inf",
            "123456789012345678",
            "2026-12-01T16:33:30Z",
            "2026-02-30T00:00:00Z",
            "1767225600",
            "1767225600.5",
            "rejected",
            "allowed",
            " 7\t",
            "4\u{e9}0",
            "12\u{e9}",
            "2026-12-01T16:33:30Z\u{e9}",
            ""
        ])
        .prop_map(str::to_string),
        "[ -~]{0,24}",
    ]
}

/// The three headers of one API-key window.
fn api_key_window() -> impl Strategy<Value = Vec<(String, String)>> {
    let window = prop::sample::select(vec!["requests", "tokens", "input-tokens", "output-tokens"]);
    (
        window,
        ratelimit_value(),
        ratelimit_value(),
        ratelimit_value(),
    )
        .prop_map(|(w, limit, remaining, reset)| {
            vec![
                (format!("anthropic-ratelimit-{w}-limit"), limit),
                (format!("anthropic-ratelimit-{w}-remaining"), remaining),
                (format!("anthropic-ratelimit-{w}-reset"), reset),
            ]
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The one-pass reading gives what the two-pass reading gave, whatever the headers, their order and repeats.
    #[test]
    fn one_pass_reads_what_the_two_passes_read(
        mut pairs in prop::collection::vec((ratelimit_name(), ratelimit_value()), 0..16),
        windows in prop::collection::vec(api_key_window(), 0..4),
        order in any::<prop::sample::Index>(),
    ) {
        // Whole API-key windows (limit, remaining, reset) too, somewhere among the other headers.
        let at = order.index(pairs.len() + 1);
        pairs.splice(at..at, windows.into_iter().flatten());
        let mut h = HeaderMap::new();
        for (n, v) in &pairs {
            if let (Ok(n), Ok(v)) = (http::HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v)) {
                h.append(n, v);
            }
        }
        // Debug text, so that a NaN utilization compares equal to itself.
        prop_assert_eq!(format!("{:?}", limits(&h)), format!("{:?}", before::limits(&h)));
    }

    /// A reset in the common form reads as the moment chrono reads from it (and as chrono's "no answer" when it names
    /// no real date or time).
    #[test]
    fn a_zulu_reset_reads_as_chrono_reads_it(
        v in "[0-9]{4}-[0-1][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9]Z|[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}[Zz]"
    ) {
        let chrono = DateTime::parse_from_rfc3339(&v).ok().map(|d| d.with_timezone(&Utc));
        prop_assert_eq!(rfc3339(&HeaderValue::from_str(&v).unwrap()), chrono, "{}", v);
    }
}

/// The answers every request gets (API-key limits; a subscription's unified windows) are read without a copy of any
/// name or status, into one allocation of room for their windows.
#[test]
fn common_answers_copy_no_name_or_status() {
    let api_key = headers(&[
        ("anthropic-ratelimit-requests-limit", "4000"),
        ("anthropic-ratelimit-requests-remaining", "3999"),
        ("anthropic-ratelimit-requests-reset", "2026-12-01T16:33:30Z"),
        ("anthropic-ratelimit-tokens-limit", "2000000"),
        ("anthropic-ratelimit-tokens-remaining", "0"),
        ("anthropic-ratelimit-input-tokens-limit", "1600000"),
        ("anthropic-ratelimit-input-tokens-remaining", "1599920"),
        ("anthropic-ratelimit-output-tokens-limit", "400000"),
        ("anthropic-ratelimit-output-tokens-remaining", "399980"),
    ]);
    let oauth = headers(&[
        ("anthropic-ratelimit-unified-status", "allowed"),
        ("anthropic-ratelimit-unified-5h-status", "allowed_warning"),
        ("anthropic-ratelimit-unified-5h-utilization", "0.02"),
        ("anthropic-ratelimit-unified-7d-status", "rejected"),
        ("anthropic-ratelimit-unified-7d_opus-status", "allowed"),
        (
            "anthropic-ratelimit-unified-representative-claim",
            "five_hour",
        ),
    ]);
    for (h, names) in [
        (
            api_key,
            &["requests", "tokens", "input-tokens", "output-tokens"][..],
        ),
        (oauth, &["5h", "7d", "7d_opus"][..]),
    ] {
        let l = limits(&h).unwrap();
        let got: Vec<&str> = l.windows.iter().map(|w| &*w.name).collect();
        assert_eq!(got, names);
        assert_eq!(l.windows.capacity(), 4);
        let borrowed = |c: &Option<Cow<'static, str>>| matches!(c, None | Some(Cow::Borrowed(_)));
        assert!(borrowed(&l.status));
        for w in &l.windows {
            assert!(
                matches!(w.name, Cow::Borrowed(_)) && borrowed(&w.status),
                "{w:?}"
            );
        }
    }
    // Names and statuses no answer is known to carry are read as they are.
    let odd = limits(&headers(&[(
        "anthropic-ratelimit-unified-1m_x-status",
        "paused",
    )]))
    .unwrap();
    assert_eq!(
        (&*odd.windows[0].name, odd.windows[0].status.as_deref()),
        ("1m_x", Some("paused"))
    );
}
