//! The few fields of a Messages request body that routing needs (`model`, `stream`, the conversation's start for
//! prompt-cache affinity, `metadata.user_id`), read on every request; the body itself is forwarded as bytes, never
//! re-serialized.
//!
//! [`Routing::read`] scans the body ([`crate::json::scan`]: no tree, no allocation) and falls back, when the scan finds
//! the body unusual, to the serde reading [`Wire`], which defines the result and words the errors: a body that serde
//! reading refuses (not JSON, a field of the wrong type, a repeated field) is refused. The property tests in
//! `routing/tests.rs` pin the scan to it.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::scan::{Scan, Scanner, Unusual};

/// What routing reads of a request body (each `None` when absent or `null`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Routing<'a> {
    pub model: Option<Cow<'a, str>>,
    pub stream: Option<bool>,
    pub messages: Option<Messages<'a>>,
    /// The text of `system` and of `tools`, as sent.
    pub system: Option<&'a str>,
    pub tools: Option<&'a str>,
    /// `metadata.user_id`.
    pub user_id: Option<Cow<'a, str>>,
}

/// A `messages` array: its length and the text of its first element, as sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Messages<'a> {
    pub len: usize,
    pub first: Option<&'a str>,
}

impl<'a> Routing<'a> {
    pub fn read(body: &'a [u8]) -> Result<Routing<'a>, serde_json::Error> {
        match scan(body) {
            Ok(r) => Ok(r),
            Err(Unusual) => serde_json::from_slice::<Wire<'a>>(body).map(Routing::from),
        }
    }
}

/// The fields the scan reads, or [`Unusual`].
fn scan(body: &[u8]) -> Scan<Routing<'_>> {
    // Raw values and strings are handed out as text: checked once (serde_json checks each one it reads).
    let text = std::str::from_utf8(body).map_err(|_| Unusual)?;
    let mut s = Scanner::new(body);
    let mut r = Routing::default();
    let mut seen = 0u8;
    s.fields(|s, key| {
        let field = match key {
            b"model" => 0,
            b"stream" => 1,
            b"messages" => 2,
            b"system" => 3,
            b"tools" => 4,
            b"metadata" => 5,
            _ => return s.skip().map(drop),
        };
        // serde refuses a repeated field.
        if seen & 1 << field != 0 {
            return Err(Unusual);
        }
        seen |= 1 << field;
        if s.null()? {
            return Ok(());
        }
        match field {
            0 => r.model = Some(Cow::Borrowed(at(text, s.plain_string()?)?)),
            1 => r.stream = Some(s.boolean()?),
            2 => r.messages = Some(messages(s, text)?),
            3 => r.system = Some(at(text, s.skip()?)?),
            4 => r.tools = Some(at(text, s.skip()?)?),
            _ => r.user_id = user_id(s, text)?,
        }
        Ok(())
    })?;
    s.end()?;
    Ok(r)
}

fn messages<'a>(s: &mut Scanner<'_>, text: &'a str) -> Scan<Messages<'a>> {
    let mut m = Messages::default();
    s.elements(|s| {
        let raw = s.skip()?;
        if m.len == 0 {
            m.first = Some(at(text, raw)?);
        }
        m.len += 1;
        Ok(())
    })?;
    Ok(m)
}

/// `metadata.user_id` (a `metadata` that is not an object is left to serde, which reads an array as its fields).
fn user_id<'a>(s: &mut Scanner<'_>, text: &'a str) -> Scan<Option<Cow<'a, str>>> {
    let mut user_id = None;
    let mut seen = false;
    s.fields(|s, key| {
        if key != b"user_id" {
            return s.skip().map(drop);
        }
        if std::mem::replace(&mut seen, true) {
            return Err(Unusual);
        }
        if !s.null()? {
            user_id = Some(Cow::Borrowed(at(text, s.plain_string()?)?));
        }
        Ok(())
    })?;
    Ok(user_id)
}

fn at(text: &str, range: std::ops::Range<usize>) -> Scan<&str> {
    text.get(range).ok_or(Unusual)
}

// === The defining reading ===

/// The body as serde reads it.
#[derive(Debug, Deserialize)]
struct Wire<'a> {
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow)]
    messages: Option<probe::Probe<'a>>,
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tools: Option<&'a RawValue>,
    #[serde(default)]
    metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    user_id: Option<String>,
}

impl<'a> From<Wire<'a>> for Routing<'a> {
    fn from(w: Wire<'a>) -> Self {
        Routing {
            model: w.model.map(Cow::Owned),
            stream: w.stream,
            messages: w.messages.map(|m| Messages {
                len: m.len,
                first: m.first.map(RawValue::get),
            }),
            system: w.system.map(RawValue::get),
            tools: w.tools.map(RawValue::get),
            user_id: w.metadata.and_then(|m| m.user_id).map(Cow::Owned),
        }
    }
}

/// Reads a `messages` array without materializing it: its length and the raw first element.
mod probe {
    use serde::de::{Deserialize, Deserializer, IgnoredAny, SeqAccess, Visitor};
    use serde_json::value::RawValue;

    #[derive(Debug)]
    pub struct Probe<'a> {
        pub len: usize,
        pub first: Option<&'a RawValue>,
    }

    impl<'de: 'a, 'a> Deserialize<'de> for Probe<'a> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<'a>(std::marker::PhantomData<&'a ()>);
            impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
                type Value = Probe<'a>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("an array of messages")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Probe<'a>, A::Error> {
                    let first: Option<&'a RawValue> = seq.next_element()?;
                    let mut len = usize::from(first.is_some());
                    while seq.next_element::<IgnoredAny>()?.is_some() {
                        len += 1;
                    }
                    Ok(Probe { len, first })
                }
            }
            d.deserialize_seq(V(std::marker::PhantomData))
        }
    }
}

#[cfg(test)]
mod tests;
