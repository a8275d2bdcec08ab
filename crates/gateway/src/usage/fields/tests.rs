#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::json::scan::tests::{cases, key, number, object, string, unusual_number, value, ws};
/// The reading these fields replace: lookups in a parsed tree.
fn by_lookup(answer: &Value) -> Option<UsageFields> {
    let u = answer.get("usage").filter(|u| !u.is_null())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64);
    let part = |k: &str| {
        u.get("cache_creation")
            .and_then(|b| b.get(k))
            .and_then(Value::as_u64)
    };
    Some(UsageFields {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_read_input_tokens: n("cache_read_input_tokens"),
        cache_creation_input_tokens: n("cache_creation_input_tokens"),
        cache_creation_5m: part("ephemeral_5m_input_tokens"),
        cache_creation_1h: part("ephemeral_1h_input_tokens"),
    })
}

#[test]
fn reads_what_a_tree_lookup_reads_for_odd_answers_too() {
    let answers = [
        r#"{"id":"m","content":[{"type":"text","text":"a \"quoted\" {usage}"}],"usage":{"input_tokens":12,"output_tokens":18,"cache_read_input_tokens":3,"cache_creation_input_tokens":30,"cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":20}}}"#,
        r#"{"usage":{"input_tokens":-1,"output_tokens":1.5,"cache_read_input_tokens":"7","cache_creation_input_tokens":null}}"#,
        r#"{"usage":{"input_tokens":{"a":1},"output_tokens":[1,2],"cache_creation":7,"service_tier":"standard"}}"#,
        r#"{"usage":{"cache_creation":{"ephemeral_5m_input_tokens":4},"cache_creation":{"ephemeral_1h_input_tokens":5}}}"#,
        r#"{"usage":{"input_tokens":1,"input_tokens":2,"output_tokens":18446744073709551615}}"#,
        r#"{"usage":{"input_tokens":99999999999999999999}}"#,
        r#"{"usage":{"\u0069nput_tokens":6}}"#,
        r#"{"usage":null}"#,
        r#"{"usage":[1,2]}"#,
        r#"{"usage":"none"}"#,
        r#"{"content":[],"model":"m"}"#,
    ];
    for a in answers {
        let tree: Value = serde_json::from_str(a).unwrap();
        let direct: AnswerUsage = serde_json::from_str(a).unwrap();
        // A `usage` that is not an object has no fields: read as absent or empty, it merges nothing either way.
        let expected = by_lookup(&tree).filter(|f| *f != UsageFields::default());
        let got = direct.0.filter(|f| *f != UsageFields::default());
        assert_eq!(got, expected, "{a}");
        let from_tree = tree
            .get("usage")
            .map(|u| UsageFields::deserialize(u).unwrap());
        assert_eq!(
            from_tree.filter(|f| *f != UsageFields::default()),
            expected,
            "{a} (from the tree)"
        );
    }
}

#[test]
fn an_answer_that_is_not_json_has_no_usage() {
    assert!(serde_json::from_str::<AnswerUsage>(r#"{"usage":{"input_tokens":1}"#).is_err());
    assert!(serde_json::from_str::<AnswerUsage>("[1]")
        .unwrap()
        .0
        .is_none());
}

/// The defining reading of an answer (serde_json through [`AnswerUsage`]), without the usage that says nothing.
fn by_serde(answer: &[u8]) -> Option<UsageFields> {
    serde_json::from_slice::<AnswerUsage>(answer)
        .ok()
        .and_then(|a| a.0)
        .filter(|u| *u != UsageFields::default())
}

/// The defining reading of an event: a parsed tree, looked up along `path`.
fn by_tree(event: &str, path: &[&str]) -> Option<UsageFields> {
    let v: Value = serde_json::from_str(event).ok()?;
    let u = path.iter().try_fold(&v, |v, k| v.get(k))?;
    Some(UsageFields::deserialize(u).unwrap()).filter(|u| *u != UsageFields::default())
}

/// Keys as the readers see them at the levels they read: plain ones (`plain`), or any, escapes and non-ASCII included.
fn read_key(plain: bool) -> BoxedStrategy<String> {
    let names = prop::sample::select(vec![
        "usage",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "cache_creation",
        "ephemeral_5m_input_tokens",
        "ephemeral_1h_input_tokens",
        "service_tier",
        "message",
        "content",
        "model",
        "id",
    ])
    .prop_map(|k| format!("\"{k}\""));
    if plain {
        prop_oneof![4 => names, 1 => "\"[a-z_]{0,10}\""].boxed()
    } else {
        prop_oneof![4 => names, 1 => key(), 1 => Just(r#""\u0069nput_tokens""#.to_string())].boxed()
    }
}

/// Any value where the readers may look into it: when `plain`, not an object (whose keys would be read).
fn any_value(plain: bool) -> BoxedStrategy<String> {
    if plain {
        prop_oneof![
            string(),
            number(),
            prop::collection::vec(value(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
        ]
        .boxed()
    } else {
        value().boxed()
    }
}

/// A token count's value: mostly an integer, else anything (`plain`: nothing the scanner leaves to serde_json).
fn count(plain: bool) -> BoxedStrategy<String> {
    let integer = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        (0u64..1000).prop_map(|n| n.to_string())
    ];
    if plain {
        let array = prop::collection::vec(value(), 0..4).prop_map(|v| format!("[{}]", v.join(",")));
        prop_oneof![4 => integer, 1 => string(), 1 => Just("null".to_string()), 1 => array].boxed()
    } else {
        prop_oneof![4 => integer, 1 => number(), 1 => unusual_number(), 1 => value()].boxed()
    }
}

/// A `usage` value: an object of counts (a `cache_creation` breakdown inside), or now and then anything else.
fn usage_value(plain: bool) -> impl Strategy<Value = String> {
    let breakdown = (
        prop::collection::vec((read_key(plain), count(plain)), 0..4),
        ws(),
    )
        .prop_map(|(m, ws)| object(m, ws));
    let member = prop_oneof![
        5 => (read_key(plain), count(plain)),
        1 => breakdown.prop_map(|b| ("\"cache_creation\"".to_string(), b)),
        1 => (read_key(plain), if plain { count(plain) } else { value().boxed() }),
    ];
    prop_oneof![
        6 => (prop::collection::vec(member, 0..8), ws()).prop_map(|(m, ws)| object(m, ws)),
        1 => any_value(plain),
    ]
}

/// Content that holds decoys: a tool input and nested values with `usage` and `model` keys of their own.
fn decoy_content(plain: bool) -> impl Strategy<Value = String> {
    (usage_value(plain), value(), string(), ws()).prop_map(|(usage, v, text, ws)| {
        let input = object(vec![("\"usage\"".into(), usage), ("\"model\"".into(), v)], ws);
        format!(r#"[{{"type":"text","text":{text}}},{{"type":"tool_use","id":"t","name":"n","input":{input}}}]"#)
    })
}

/// A non-stream answer: members in any order, `usage` absent, once, or repeated, decoys inside.
fn answer(plain: bool) -> impl Strategy<Value = String> {
    let member = prop_oneof![
        3 => usage_value(plain).prop_map(|u| ("\"usage\"".to_string(), u)),
        2 => decoy_content(plain).prop_map(|c| ("\"content\"".to_string(), c)),
        2 => (read_key(plain), any_value(plain)),
    ];
    (prop::collection::vec(member, 0..6), ws(), ws())
        .prop_map(|(m, ws, around)| format!("{around}{}{around}", object(m, ws)))
}

/// A stream event with its usage where `path` says (`message_start`: under `message`).
fn event(plain: bool) -> impl Strategy<Value = (String, Vec<&'static str>)> {
    (answer(plain), any::<bool>(), value(), ws()).prop_map(|(inner, start, other, ws)| {
        if start {
            let members = vec![
                ("\"type\"".into(), "\"message_start\"".into()),
                ("\"message\"".into(), inner),
                ("\"usage\"".into(), other),
            ];
            (object(members, ws), vec!["message", "usage"])
        } else {
            (inner, vec!["usage"])
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn an_answer_reads_as_serde_json_reads_it(a in answer(false)) {
        prop_assert_eq!(answer_usage(a.as_bytes()), by_serde(a.as_bytes()), "{}", a);
    }

    #[test]
    fn an_answer_reads_as_a_tree_lookup_reads_it(a in answer(false)) {
        if let Ok(tree) = serde_json::from_str::<Value>(&a) {
            let expected = by_lookup(&tree).filter(|f| *f != UsageFields::default());
            prop_assert_eq!(answer_usage(a.as_bytes()), expected, "{}", a);
        }
    }

    #[test]
    fn a_plain_answer_is_scanned_not_left_to_serde_json(a in answer(true)) {
        let scanned = scan_usage_at(a.as_bytes(), &["usage"]);
        prop_assert!(scanned.is_ok(), "{}", a);
        prop_assert_eq!(scanned.unwrap().filter(|u| *u != UsageFields::default()), by_serde(a.as_bytes()), "{}", a);
    }

    #[test]
    fn a_damaged_answer_reads_as_serde_json_reads_it(a in answer(false), at in any::<prop::sample::Index>(), cut in any::<bool>()) {
        let mut t = a.into_bytes();
        let i = at.index(t.len() + 1);
        if cut { t.truncate(i) } else if i < t.len() { t[i] = b'"' }
        prop_assert_eq!(answer_usage(&t), by_serde(&t), "{:?}", String::from_utf8_lossy(&t));
    }

    #[test]
    fn an_event_reads_as_its_tree_reads((e, path) in event(false)) {
        prop_assert_eq!(event_usage(&e, &path), by_tree(&e, &path), "{}", e);
    }

    #[test]
    fn a_plain_event_is_scanned_not_left_to_serde_json((e, path) in event(true)) {
        let scanned = scan_usage_at(e.as_bytes(), &path);
        prop_assert!(scanned.is_ok(), "{}", e);
        prop_assert_eq!(scanned.unwrap().filter(|u| *u != UsageFields::default()), by_tree(&e, &path), "{}", e);
    }
}

#[test]
fn the_usage_after_a_decoy_and_the_last_of_repeated_ones_is_read() {
    let a = br#"{"content":[{"type":"tool_use","input":{"usage":{"input_tokens":99},"model":"x"}}],"usage":{"input_tokens":1},"usage":{"output_tokens":2,"output_tokens":3}}"#;
    let expected = UsageFields {
        output_tokens: Some(3),
        ..UsageFields::default()
    };
    assert_eq!(scan_usage_at(a, &["usage"]), Ok(Some(expected)));
    assert_eq!(answer_usage(a), Some(expected));
    assert_eq!(
        answer_usage(br#"{"usage":{"input_tokens":1},"usage":null}"#),
        None
    );
    assert_eq!(answer_usage(br#"{"usage":{"input_tokens":1}"#), None);
}
