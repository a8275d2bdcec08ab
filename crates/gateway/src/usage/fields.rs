//! The token fields of an Anthropic `usage` object, read straight from the JSON (no tree built: a non-stream answer's
//! usage is read on every request, a stream's in `message_start` and `message_delta`).
//!
//! As lenient as looking the fields up in a parsed tree: a field that is not an unsigned integer counts as absent, a
//! `usage` (or `cache_creation`) that is not an object has no fields, and a repeated key keeps its last value.
//!
//! [`answer_usage`] and [`event_usage`] read with [`crate::json::scan`] and fall back, when the scan finds the text
//! unusual, to the readings that define their results: the serde visitors below for an answer (what serde_json reads
//! as `AnswerUsage`), a parsed tree for an event (what the stream relay always did). A text that is not JSON has no
//! usage. The property tests in `fields/tests.rs` pin the scan to those readings.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::json::scan::{Scan, Scanner, Unusual};

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

/// The usage of a non-stream answer: its top-level `usage` (the last one, if repeated). `None` when the answer has none,
/// when its usage has none of the fields, or when the answer is not JSON.
pub fn answer_usage(body: &[u8]) -> Option<UsageFields> {
    scan_usage_at(body, &["usage"])
        .unwrap_or_else(|Unusual| {
            serde_json::from_slice::<AnswerUsage>(body)
                .ok()
                .and_then(|a| a.0)
        })
        .filter(|u| *u != UsageFields::default())
}

/// The usage at `path` in a stream event's data (`["message", "usage"]` in `message_start`, `["usage"]` in
/// `message_delta`), `None` as for [`answer_usage`].
pub fn event_usage(data: &str, path: &[&str]) -> Option<UsageFields> {
    scan_usage_at(data.as_bytes(), path)
        .unwrap_or_else(|Unusual| {
            let event: serde_json::Value = serde_json::from_str(data).ok()?;
            let usage = path.iter().try_fold(&event, |v, k| v.get(k))?;
            Some(UsageFields::deserialize(usage).unwrap_or_default())
        })
        .filter(|u| *u != UsageFields::default())
}

/// The usage at `path` of a whole text (`None` when a step is missing, not an object, or the usage is `null`).
fn scan_usage_at(text: &[u8], path: &[&str]) -> Scan<Option<UsageFields>> {
    let mut s = Scanner::new(text);
    let found = usage_at(&mut s, path)?;
    s.end()?;
    Ok(found)
}

fn usage_at(s: &mut Scanner<'_>, path: &[&str]) -> Scan<Option<UsageFields>> {
    let Some((name, rest)) = path.split_first() else {
        return usage_object(s);
    };
    let mut found = None;
    if s.peek() != Some(b'{') {
        s.skip()?;
        return Ok(found);
    }
    s.fields(|s, key| {
        if key == name.as_bytes() {
            found = usage_at(s, rest)?;
        } else {
            s.skip()?;
        }
        Ok(())
    })?;
    Ok(found)
}

fn usage_object(s: &mut Scanner<'_>) -> Scan<Option<UsageFields>> {
    if s.null()? {
        return Ok(None);
    }
    let mut u = UsageFields::default();
    if s.peek() != Some(b'{') {
        s.skip()?;
        return Ok(Some(u));
    }
    s.fields(|s, key| {
        match key {
            b"input_tokens" => u.input_tokens = s.count()?,
            b"output_tokens" => u.output_tokens = s.count()?,
            b"cache_read_input_tokens" => u.cache_read_input_tokens = s.count()?,
            b"cache_creation_input_tokens" => u.cache_creation_input_tokens = s.count()?,
            b"cache_creation" => (u.cache_creation_5m, u.cache_creation_1h) = breakdown(s)?,
            _ => {
                s.skip()?;
            }
        }
        Ok(())
    })?;
    Ok(Some(u))
}

/// `cache_creation`: the 5-minute and 1-hour writes.
fn breakdown(s: &mut Scanner<'_>) -> Scan<(Option<u64>, Option<u64>)> {
    let mut b = (None, None);
    if s.peek() != Some(b'{') {
        s.skip()?;
        return Ok(b);
    }
    s.fields(|s, key| {
        match key {
            b"ephemeral_5m_input_tokens" => b.0 = s.count()?,
            b"ephemeral_1h_input_tokens" => b.1 = s.count()?,
            _ => {
                s.skip()?;
            }
        }
        Ok(())
    })?;
    Ok(b)
}

/// A non-stream answer, for its `usage` only (every other field is skipped unparsed).
#[derive(Debug, Default)]
struct AnswerUsage(pub Option<UsageFields>);

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
mod tests;
