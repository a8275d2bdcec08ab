//! Property tests ("fuzzing" with proptest) of every parser that sees upstream bytes: the rate-limit headers, token
//! responses, the SSE decoder, and the OpenAI translation both ways (client requests in, Anthropic answers out). The
//! promise under test: no input panics, and every number read lands in its bounded domain. 2,000 inputs per property in the
//! suite (`PROPTEST_CASES` for more).

use std::time::Duration;

use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::Value;

use crate::clock::MAX_WAIT;

/// Inputs per property: 2,000 in the test suite, more with `PROPTEST_CASES`.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// Header values an upstream might send: hostile numbers, dates, and arbitrary visible text.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>().prop_map(|f| f.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        any::<i128>().prop_map(|i| i.to_string()),
        any::<u64>().prop_map(|i| i.to_string()),
        any::<i64>().prop_map(|s| {
            DateTime::from_timestamp(s % 400_000_000_000, 0)
                .map(|d| d.to_rfc3339())
                .unwrap_or_default()
        }),
        any::<u32>().prop_map(|s| httpdate::fmt_http_date(
            std::time::UNIX_EPOCH + Duration::from_secs(u64::from(s) * 3)
        )),
        prop::sample::select(vec![
            "inf", "-inf", "NaN", "1e23", "1e309", "-0", "", " 5 ", "0x10", "1_000"
        ])
        .prop_map(str::to_string),
        "[ -~]{0,40}",
    ]
}

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "retry-after",
            "retry-after-ms",
            "anthropic-ratelimit-unified-status",
            "anthropic-ratelimit-unified-reset",
            "anthropic-ratelimit-unified-5h-status",
            "anthropic-ratelimit-unified-5h-reset",
            "anthropic-ratelimit-unified-5h-utilization",
            "anthropic-ratelimit-unified-7d-reset",
            "anthropic-ratelimit-unified-7d_opus-reset",
            "anthropic-ratelimit-unified-7d_opus-status",
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
            "anthropic-ratelimit-tokens-limit",
            "anthropic-ratelimit-tokens-remaining",
        ])
        .prop_map(str::to_string),
        "anthropic-ratelimit-unified-[a-z0-9_-]{0,12}",
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::String),
        prop::sample::select(vec![
            "text",
            "tool_use",
            "thinking",
            "image",
            "end_turn",
            "max_tokens",
            "tool_use",
            "message",
            "error",
            "rate_limit_error",
            "user",
            "assistant",
            "msg_1",
            "input_tokens",
        ])
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "type",
                        "id",
                        "model",
                        "role",
                        "content",
                        "text",
                        "stop_reason",
                        "usage",
                        "input_tokens",
                        "output_tokens",
                        "cache_read_input_tokens",
                        "cache_creation_input_tokens",
                        "error",
                        "message",
                        "name",
                        "input",
                        "thinking",
                        "delta",
                        "index",
                        "content_block",
                        "partial_json",
                        "data",
                        "expires_in",
                        "access_token",
                        "refresh_token",
                        "account",
                        "organization",
                    ]),
                    inner
                ),
                0..8
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_780_000_000, 0).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Rate-limit headers: never a panic; every wait within `MAX_WAIT`; every reset usable in time arithmetic.
    #[test]
    fn ratelimit_headers_never_panic_and_stay_bounded(
        headers in prop::collection::vec((header_name(), header_value()), 0..10)
    ) {
        let mut map = HeaderMap::new();
        for (n, v) in &headers {
            if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v)) {
                map.append(n, v);
            }
        }
        if let Some(wait) = crate::ratelimit::retry_after(&map, now()) {
            prop_assert!(wait <= MAX_WAIT);
            let _ = crate::clock::instant_in(wait);
            let _ = crate::clock::wall_in(now(), wait);
        }
        if let Some(l) = crate::ratelimit::limits(&map) {
            for reset in [l.account_rejected_until(), l.model_rejected_until(), l.reset].into_iter().flatten() {
                let wait = crate::clock::wait_until(now(), reset);
                prop_assert!(wait <= MAX_WAIT);
                let _ = crate::clock::instant_in(wait);
            }
            let _ = l.utilization();
        }
    }

    /// Token responses: arbitrary JSON (shaped like a token response or not) never panics, and `expires_in` is
    /// always within `MAX_WAIT`, so the expiry it implies never overflows.
    #[test]
    fn token_responses_never_panic_and_expiry_is_bounded(
        mut body in arb_json(),
        expires_in in arb_json(),
        raw in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        if let Value::Object(m) = &mut body {
            m.insert("access_token".into(), Value::String("sk-ant-oat01-x".into()));
            m.insert("expires_in".into(), expires_in);
        }
        for bytes in [serde_json::to_vec(&body).unwrap(), raw] {
            if let Ok(t) = serde_json::from_slice::<crate::oauth::TokenResponse>(&bytes) {
                prop_assert!(t.expires_in.is_none_or(|s| s <= MAX_WAIT.as_secs()));
                let _ = t.expires_at(now());
                let _ = t.expires_at(DateTime::<Utc>::MAX_UTC);
                let _ = crate::refresh::journal::Rotation::new(None, &t, now()).tokens(now());
            }
        }
    }

    /// The SSE decoder on arbitrary bytes in arbitrary chunks, with the OpenAI stream translator behind it.
    #[test]
    fn sse_and_the_openai_stream_translation_never_panic_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(0usize..600, 0..8),
        events in prop::collection::vec((prop::sample::select(vec![
            "message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta",
            "message_stop", "error", "ping",
        ]), arb_json()), 0..8),
    ) {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut decoder = crate::sse::SseDecoder::default();
        let mut last = 0;
        let mut n = 0usize;
        for c in cuts.into_iter().chain([bytes.len()]) {
            let c = c.min(bytes.len());
            if c >= last {
                decoder.push(&bytes[last..c], &mut |_| n += 1);
                last = c;
            }
        }
        let labels = || crate::openai::response::Labels { model: "m".into(), created: 0, include_usage: true };
        let _ = crate::openai::stream::translate_all(labels(), &bytes);
        let text: String = events.iter().map(|(e, d)| format!("event: {e}\ndata: {d}\n\n")).collect();
        let _ = crate::openai::stream::translate_all(labels(), text.as_bytes());
    }

    /// The OpenAI translation both ways: arbitrary client bodies in, arbitrary Anthropic answers and errors out.
    #[test]
    fn openai_translation_never_panics_either_way(
        answer in arb_json(),
        request in arb_json(),
        raw in prop::collection::vec(any::<u8>(), 0..300),
        status in 100u16..600,
    ) {
        let labels = crate::openai::response::Labels { model: "m".into(), created: i64::MAX, include_usage: true };
        let _ = crate::openai::response::completion(&answer, &labels);
        let _ = crate::openai::models::reshape(&answer);
        let status = http::StatusCode::from_u16(status).unwrap();
        let _ = crate::openai::error::from_anthropic_body(status, &serde_json::to_vec(&answer).unwrap());
        let _ = crate::openai::error::from_anthropic_body(status, &raw);
        let _ = crate::openai::request::translate(&serde_json::to_vec(&request).unwrap());
        let _ = crate::openai::request::translate(&raw);
        let mut obj = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        if let (Value::Object(o), Value::Object(extra)) = (&mut obj, &request) {
            o.extend(extra.clone());
        }
        let _ = crate::openai::request::translate(&serde_json::to_vec(&obj).unwrap());
    }
}
