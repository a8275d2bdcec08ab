//! Parsing a client's JSON with bounded work.
//!
//! A `serde_json::Value` costs tens of bytes per value whatever its text costs, so 32 MiB of `[0,0,0,…]` would become
//! more than a gigabyte of tree. [`parse_bounded`] first counts the values without building anything (no allocation
//! beyond serde_json's scratch buffer) and stops at the limit; only a text within it is parsed into a tree.

pub mod scan;

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Why a body could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("request body is not valid JSON: {0}")]
    Syntax(serde_json::Error),
    #[error("request body has more than {0} JSON values")]
    TooManyValues(usize),
}

/// Parses `text` into a tree if it holds at most `max_values` values (every scalar, array, object and key counts one).
pub fn parse_bounded(text: &[u8], max_values: usize) -> Result<Value, JsonError> {
    let left = Cell::new(max_values);
    let exceeded = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(text);
    let counted = Counter {
        left: &left,
        exceeded: &exceeded,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match counted {
        Err(_) if exceeded.get() => Err(JsonError::TooManyValues(max_values)),
        Err(e) => Err(JsonError::Syntax(e)),
        Ok(()) => serde_json::from_slice(text).map_err(JsonError::Syntax),
    }
}

/// Visits a value without keeping it, taking one from `left` for each value seen.
#[derive(Clone, Copy)]
struct Counter<'a> {
    left: &'a Cell<usize>,
    exceeded: &'a Cell<bool>,
}

impl Counter<'_> {
    fn take<E: serde::de::Error>(self) -> Result<(), E> {
        match self.left.get().checked_sub(1) {
            Some(n) => {
                self.left.set(n);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom("too many values"))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Counter<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Counter<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.take()
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.take()
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.take()
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.take()
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.take()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.take()
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.take()?;
        while seq.next_element_seed(self)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.take()?;
        while map.next_key::<IgnoredAny>()?.is_some() {
            self.take::<A::Error>()?;
            map.next_value_seed(self)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_within_the_limit_parses_as_serde_json_would() {
        let text = br#"{"a":[1,2,{"b":null}],"c":"d"}"#;
        // Values: the object, key a, the array, 1, 2, the inner object, key b, null, key c, "d".
        assert_eq!(
            parse_bounded(text, 10).unwrap(),
            serde_json::from_slice::<Value>(text).unwrap()
        );
        assert!(matches!(
            parse_bounded(text, 9),
            Err(JsonError::TooManyValues(9))
        ));
    }

    #[test]
    fn a_huge_array_of_zeros_is_refused_without_building_it() {
        let mut text = b"[".to_vec();
        text.extend(std::iter::repeat_n(b"0,".as_slice(), 1_000_000).flatten());
        text.extend_from_slice(b"0]");
        assert!(matches!(
            parse_bounded(&text, 1000),
            Err(JsonError::TooManyValues(1000))
        ));
    }

    #[test]
    fn bad_json_is_a_syntax_error() {
        assert!(matches!(
            parse_bounded(b"{\"a\":", 100),
            Err(JsonError::Syntax(_))
        ));
        assert!(matches!(
            parse_bounded(b"[1] [2]", 100),
            Err(JsonError::Syntax(_))
        ));
    }
}
