#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;

use super::*;
use crate::json::scan::tests::{cases, key, object, string, value, ws};

/// The defining reading: serde through [`Wire`].
fn by_serde(body: &[u8]) -> Result<Routing<'_>, String> {
    serde_json::from_slice::<Wire<'_>>(body)
        .map(Routing::from)
        .map_err(|e| e.to_string())
}

/// A message whose content holds decoys: `model`, `stream` and `usage` keys of a tool input, quotes and braces.
fn message() -> impl Strategy<Value = String> {
    (value(), string(), ws()).prop_map(|(input, text, ws)| {
        let decoy = object(
            vec![
                ("\"model\"".into(), text.clone()),
                ("\"stream\"".into(), "true".into()),
                ("\"metadata\"".into(), r#"{"user_id":"decoy"}"#.into()),
                ("\"usage\"".into(), input),
            ],
            ws,
        );
        format!(
            r#"{{"role":"user","content":[{{"type":"text","text":{text}}},{{"type":"tool_use","id":"t","name":"n","input":{decoy}}}]}}"#
        )
    })
}

fn messages() -> impl Strategy<Value = String> {
    (prop::collection::vec(message(), 0..4), ws())
        .prop_map(|(m, ws)| format!("[{ws}{}{ws}]", m.join(&format!(",{ws}"))))
}

fn model() -> impl Strategy<Value = String> {
    "\"claude-[a-z0-9.-]{0,16}\""
}

/// The routing fields with their usual values (`plain`), or with anything, of any type.
fn fields(plain: bool) -> Vec<BoxedStrategy<(String, String)>> {
    let member = |k: &'static str, v: BoxedStrategy<String>| {
        v.prop_map(move |v| (format!("\"{k}\""), v)).boxed()
    };
    let metadata = (
        prop_oneof![model(), Just("null".to_string())],
        (value(), ws()),
    )
        .prop_map(|(id, (other, ws))| {
            object(
                vec![("\"tags\"".into(), other), ("\"user_id\"".into(), id)],
                ws,
            )
        });
    if plain {
        vec![
            member(
                "model",
                prop_oneof![4 => model(), 1 => Just("null".to_string())].boxed(),
            ),
            member(
                "stream",
                prop::sample::select(vec!["true", "false", "null"])
                    .prop_map(str::to_string)
                    .boxed(),
            ),
            member("messages", messages().boxed()),
            member("system", value().boxed()),
            member("tools", value().boxed()),
            member("metadata", metadata.boxed()),
        ]
    } else {
        vec![
            member("model", prop_oneof![model(), string(), value()].boxed()),
            member(
                "stream",
                prop_oneof![Just("true".to_string()), value()].boxed(),
            ),
            member(
                "messages",
                prop_oneof![3 => messages(), 1 => value()].boxed(),
            ),
            member("system", value().boxed()),
            member("tools", value().boxed()),
            member("metadata", prop_oneof![metadata, value()].boxed()),
            (key(), value()).boxed(),
        ]
    }
}

/// A request body: the routing fields in any order, among other members. When not `plain`, fields repeat and have
/// any value, keys have escapes.
fn body(plain: bool) -> impl Strategy<Value = String> {
    let other = ("\"x_[a-z_]{0,8}\"", value()).boxed();
    let picked: BoxedStrategy<Vec<(String, String)>> = if plain {
        let present = fields(true)
            .into_iter()
            .map(|f| prop::option::weighted(0.8, f))
            .collect::<Vec<_>>();
        (present, prop::collection::vec(other, 0..3))
            .prop_map(|(p, o)| p.into_iter().flatten().chain(o).collect::<Vec<_>>())
            .prop_shuffle()
            .boxed()
    } else {
        prop::collection::vec(prop::strategy::Union::new(fields(false)), 0..9).boxed()
    };
    (picked, ws(), ws()).prop_map(|(m, ws, around)| format!("{around}{}{around}", object(m, ws)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn a_body_reads_as_serde_reads_it(b in body(false)) {
        prop_assert_eq!(Routing::read(b.as_bytes()).map_err(|e| e.to_string()), by_serde(b.as_bytes()), "{}", b);
    }

    #[test]
    fn a_usual_body_is_scanned_not_left_to_serde(b in body(true)) {
        prop_assert_eq!(scan(b.as_bytes()).map_err(|_| "unusual".to_string()), by_serde(b.as_bytes()), "{}", b);
    }

    #[test]
    fn a_damaged_body_reads_as_serde_reads_it(b in body(true), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut t = b.into_bytes();
        let i = at.index(t.len());
        t[i] = byte;
        prop_assert_eq!(Routing::read(&t).map_err(|e| e.to_string()), by_serde(&t), "{:?}", String::from_utf8_lossy(&t));
    }
}

#[test]
fn a_repeated_or_mistyped_field_is_refused_as_serde_refuses_it() {
    for b in [
        r#"{"model":"a","model":"b","messages":[{}]}"#,
        r#"{"model":"a","messages":[{}],"metadata":{"user_id":"u","user_id":"v"}}"#,
        r#"{"model":5,"messages":[{}]}"#,
        r#"{"model":"a","stream":"yes","messages":[{}]}"#,
        r#"{"model":"a","messages":{}}"#,
        r#"{"model":"a","messages":[{}]} x"#,
    ] {
        assert_eq!(scan(b.as_bytes()), Err(Unusual), "{b}");
        assert!(Routing::read(b.as_bytes()).is_err(), "{b}");
    }
    // What serde accepts beyond the usual shape is read as serde reads it.
    let seq = Routing::read(br#"{"model":"m","messages":[1,2],"metadata":["u"]}"#).unwrap();
    assert_eq!(seq.user_id.as_deref(), Some("u"));
    let escaped = Routing::read(br#"{"mod\u0065l":"a\"b","messages":[{"x":1} ,2]}"#).unwrap();
    assert_eq!(escaped.model.as_deref(), Some("a\"b"));
    assert_eq!(
        escaped.messages,
        Some(Messages {
            len: 2,
            first: Some(r#"{"x":1}"#)
        })
    );
}
