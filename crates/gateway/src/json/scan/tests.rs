//! The scanner against serde_json: it accepts the JSON texts it is given (bar the documented unusual ones), never a
//! text serde_json refuses, and a skipped value's range is that value's text. The generators here also build the
//! documents of the field readers' property tests (`usage/fields/tests.rs`, `proxy/routing/tests.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde::de::IgnoredAny;
use serde_json::Value;

use super::*;

/// Inputs per property: 1,000 in the test suite, more with `PROPTEST_CASES`.
pub(crate) fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000)
}

/// Strings that trip naive scanners: escaped quotes and backslashes, braces, keys the readers look for, unicode
/// escapes (a surrogate pair too), as JSON text.
pub(crate) fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}".prop_map(|s| Value::String(s).to_string()),
        prop::sample::select(vec![
            r#""""#,
            r#""a \"quoted\" {usage}""#,
            r#""\\""#,
            r#""\\\"}]""#,
            r#""{\"usage\":{\"input_tokens\":1},\"model\":\"x\"}""#,
            r#""\u0075sage""#,
            r#""\ud83d\ude00 \u00e9 \/ \b\f\n\r\t""#,
            r#""usage""#,
            r#""model""#,
            "\"caf\u{e9} \u{1f600}\"",
        ])
        .prop_map(str::to_string),
    ]
}

/// Numbers as JSON text: integers of every size, negative ones, fractions (no exponents: see [`unusual_number`]).
pub(crate) fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (any::<i32>(), 1u32..1000).prop_map(|(i, f)| format!("{i}.{f}")),
        prop::sample::select(vec![
            "0",
            "-0",
            "0.0",
            "-0.5",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999"
        ])
        .prop_map(str::to_string),
    ]
}

/// Numbers the scanner leaves to serde_json.
pub(crate) fn unusual_number() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["1e2", "1E+2", "-2.5e-3", "1e400", "0e0"]).prop_map(str::to_string)
}

/// Keys: the ones the readers look for (so that decoys appear at every depth) and any other.
pub(crate) fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "usage", "model", "message", "messages", "metadata", "user_id", "stream", "system", "tools",
            "input_tokens", "output_tokens", "cache_creation", "ephemeral_5m_input_tokens", "input", "content",
        ])
        .prop_map(|k| format!("\"{k}\"")),
        1 => string(),
    ]
}

/// Whitespace between tokens: mostly none (compact), sometimes pretty-printed.
pub(crate) fn ws() -> impl Strategy<Value = &'static str> {
    prop_oneof![4 => Just(""), 1 => prop::sample::select(vec![" ", "\n  ", "\t", "\r\n"])]
}

/// An object from its members' texts (`"key":value`, repeats allowed).
pub(crate) fn object(members: Vec<(String, String)>, ws: &str) -> String {
    let body: Vec<String> = members
        .into_iter()
        .map(|(k, v)| format!("{ws}{k}{ws}:{ws}{v}"))
        .collect();
    format!("{{{}{ws}}}", body.join(","))
}

/// Any JSON value as text, nested a few levels, repeated keys included.
pub(crate) fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        prop::sample::select(vec!["null", "true", "false"]).prop_map(str::to_string),
        number(),
        string(),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            (prop::collection::vec(inner.clone(), 0..6), ws())
                .prop_map(|(items, ws)| format!("[{ws}{}{ws}]", items.join(&format!("{ws},{ws}")))),
            (prop::collection::vec((key(), inner), 0..6), ws()).prop_map(|(m, ws)| object(m, ws)),
        ]
    })
}

/// A valid text, damaged: a byte changed, dropped or inserted, or the text cut.
fn damaged() -> impl Strategy<Value = Vec<u8>> {
    (value(), any::<prop::sample::Index>(), any::<u8>(), 0..4u8).prop_map(|(v, at, b, how)| {
        let mut t = v.into_bytes();
        let i = at.index(t.len() + 1);
        match how {
            0 if i < t.len() => t[i] = b,
            1 if i < t.len() => {
                t.remove(i);
            }
            2 => t.insert(i, b),
            _ => t.truncate(i),
        }
        t
    })
}

fn scan_whole(text: &[u8]) -> Scan<Range<usize>> {
    let mut s = Scanner::new(text);
    let range = s.skip()?;
    s.end()?;
    Ok(range)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn a_json_text_is_skipped_whole(v in value(), before in ws(), after in ws()) {
        let text = format!("{before}{v}{after}");
        prop_assert_eq!(scan_whole(text.as_bytes()), Ok(before.len()..before.len() + v.len()), "{}", text);
        prop_assert!(serde_json::from_str::<Value>(&text).is_ok());
    }

    #[test]
    fn a_text_the_scan_accepts_serde_json_accepts(t in damaged()) {
        if scan_whole(&t).is_ok() {
            prop_assert!(serde_json::from_slice::<IgnoredAny>(&t).is_ok(), "{:?}", String::from_utf8_lossy(&t));
            if let Ok(text) = std::str::from_utf8(&t) {
                prop_assert!(serde_json::from_str::<Value>(text).is_ok(), "{}", text);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_are_refused_when_serde_json_refuses(t in prop::collection::vec(any::<u8>(), 0..64)) {
        if scan_whole(&t).is_ok() {
            prop_assert!(serde_json::from_slice::<IgnoredAny>(&t).is_ok());
        }
    }

    #[test]
    fn a_run_of_plain_string_bytes_ends_at_the_first_special_byte(
        t in prop::collection::vec(prop_oneof![40 => 0x20u8..0x7f, 1 => any::<u8>()], 0..200),
        from in any::<prop::sample::Index>(),
    ) {
        let from = from.index(t.len() + 1);
        let s = Scanner { text: &t, pos: from };
        let expected = t[from..].iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20).unwrap_or(t.len() - from);
        prop_assert_eq!(s.ordinary_run(), expected);
    }

    #[test]
    fn a_number_reads_as_its_u64_when_it_is_one(n in number()) {
        let read = Scanner::new(n.as_bytes()).count();
        match serde_json::from_str::<Value>(&n).ok().and_then(|v| v.as_u64()) {
            Some(v) if !n.contains('.') && !n.starts_with('-') => prop_assert_eq!(read, Ok(Some(v))),
            _ => prop_assert_eq!(read, Err(Unusual)),
        }
    }
}

#[test]
fn the_documented_unusual_texts_are_left_to_serde_json() {
    for t in [
        r#"{"\u0061":1}"#,
        "{\"caf\u{e9}\":1}",
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        "1e2",
        "1E+2",
        "[1e400]",
        &format!("{}0", "9".repeat(308)),
        &format!("{}1{}", "[".repeat(65), "]".repeat(65)),
    ] {
        let mut s = Scanner::new(t.as_bytes());
        let scanned = s.skip();
        assert!(
            scanned.is_err() || t.starts_with("{\""),
            "{t} was scanned: {scanned:?}"
        );
        if t.starts_with('{') {
            assert_eq!(
                Scanner::new(t.as_bytes()).fields(|s, _| s.skip().map(drop)),
                Err(Unusual),
                "{t}"
            );
        }
    }
    let deepest = format!("{}1{}", "[".repeat(64), "]".repeat(64));
    assert_eq!(scan_whole(deepest.as_bytes()), Ok(0..129));
    let long = "9".repeat(308);
    assert_eq!(scan_whole(long.as_bytes()), Ok(0..308));
}

#[test]
fn grammar_errors_are_refused() {
    for t in [
        "",
        " ",
        "{",
        "}",
        "[1,]",
        "[,1]",
        r#"{"a":1,}"#,
        r#"{"a"}"#,
        r#"{"a":}"#,
        r#"{1:2}"#,
        "[1}",
        r#"{"a":1]"#,
        "01",
        "-",
        "1.",
        ".5",
        "+1",
        "--1",
        "tru",
        "nul",
        "True",
        "\"a",
        "\"\\x\"",
        "\"\\u12\"",
        "\"\\u12G4\"",
        "\"a\u{1}b\"",
        "\"tab\there\"",
        "[1] [2]",
        "1 2",
        "[1]x",
        "'a'",
    ] {
        assert_eq!(scan_whole(t.as_bytes()), Err(Unusual), "{t:?}");
        assert!(serde_json::from_str::<IgnoredAny>(t).is_err(), "{t:?}");
    }
}
