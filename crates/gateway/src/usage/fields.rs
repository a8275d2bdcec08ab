//! The token fields of an Anthropic `usage` object, read straight from the JSON (no tree built: a non-stream answer's
//! usage is read on every request).
//!
//! As lenient as looking the fields up in a parsed tree: a field that is not an unsigned integer counts as absent, a
//! `usage` (or `cache_creation`) that is not an object has no fields, and a repeated key keeps its last value.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// What an Anthropic `usage` object says about tokens.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UsageFields {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_input_tokens: Option<u64>,
    pub cache_creation_input_tokens: Option<u64>,
    /// `cache_creation.ephemeral_5m_input_tokens`.
    pub cache_creation_5m: Option<u64>,
    /// `cache_creation.ephemeral_1h_input_tokens`.
    pub cache_creation_1h: Option<u64>,
}

/// A non-stream answer, for its `usage` only (every other field is skipped unparsed).
#[derive(Debug, Default)]
pub struct AnswerUsage(pub Option<UsageFields>);

/// An object read key by key; anything else reads as the default.
trait FromObject<'de>: Default {
    fn field<A: MapAccess<'de>>(&mut self, key: Key, map: &mut A) -> Result<(), A::Error>;
}

impl<'de> FromObject<'de> for UsageFields {
    fn field<A: MapAccess<'de>>(&mut self, key: Key, map: &mut A) -> Result<(), A::Error> {
        let slot = match key {
            Key::InputTokens => &mut self.input_tokens,
            Key::OutputTokens => &mut self.output_tokens,
            Key::CacheReadInputTokens => &mut self.cache_read_input_tokens,
            Key::CacheCreationInputTokens => &mut self.cache_creation_input_tokens,
            Key::CacheCreation => {
                let b: Breakdown = map.next_value()?;
                self.cache_creation_5m = b.ephemeral_5m;
                self.cache_creation_1h = b.ephemeral_1h;
                return Ok(());
            }
            _ => {
                map.next_value::<IgnoredAny>()?;
                return Ok(());
            }
        };
        *slot = map.next_value::<Count>()?.0;
        Ok(())
    }
}

#[derive(Debug, Default)]
struct Breakdown {
    ephemeral_5m: Option<u64>,
    ephemeral_1h: Option<u64>,
}

impl<'de> FromObject<'de> for Breakdown {
    fn field<A: MapAccess<'de>>(&mut self, key: Key, map: &mut A) -> Result<(), A::Error> {
        match key {
            Key::Ephemeral5m => self.ephemeral_5m = map.next_value::<Count>()?.0,
            Key::Ephemeral1h => self.ephemeral_1h = map.next_value::<Count>()?.0,
            _ => {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

impl<'de> FromObject<'de> for AnswerUsage {
    fn field<A: MapAccess<'de>>(&mut self, key: Key, map: &mut A) -> Result<(), A::Error> {
        if key == Key::Usage {
            self.0 = map.next_value()?;
        } else {
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }
}

/// The keys read (any other key is skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    InputTokens,
    OutputTokens,
    CacheReadInputTokens,
    CacheCreationInputTokens,
    CacheCreation,
    Ephemeral5m,
    Ephemeral1h,
    Usage,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "input_tokens" => Key::InputTokens,
                    "output_tokens" => Key::OutputTokens,
                    "cache_read_input_tokens" => Key::CacheReadInputTokens,
                    "cache_creation_input_tokens" => Key::CacheCreationInputTokens,
                    "cache_creation" => Key::CacheCreation,
                    "ephemeral_5m_input_tokens" => Key::Ephemeral5m,
                    "ephemeral_1h_input_tokens" => Key::Ephemeral1h,
                    "usage" => Key::Usage,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// Reads any JSON value as `T`: an object field by field, anything else as `T::default()`.
struct Lenient<T>(std::marker::PhantomData<T>);

impl<'de, T: FromObject<'de>> Visitor<'de> for Lenient<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut out = T::default();
        while let Some(k) = map.next_key::<Key>()? {
            out.field(k, &mut map)?;
        }
        Ok(out)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(T::default())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<T, E> {
        Ok(T::default())
    }
    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }
}

impl<'de> Deserialize<'de> for UsageFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Lenient(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for Breakdown {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Lenient(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for AnswerUsage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Lenient(std::marker::PhantomData))
    }
}

/// A token count: an unsigned integer, or absent (any other value).
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Count, E> {
                Ok(Count(Some(v)))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::Value;

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
}
