//! `Patch<T>`: one optional field of a change — keep it, set it, or clear it — instead of `Option<Option<T>>`.
//!
//! In JSON (a field marked `#[serde(default)]`): absent keeps, `null` clears, a value sets.

use serde::{Deserialize, Deserializer};

/// One optional field of a change: leave it as it is, set it, or clear it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Patch<T> {
    #[default]
    Keep,
    Set(T),
    Clear,
}

impl<T> Patch<T> {
    /// Sets the field to exactly `value` (clearing it when `None`).
    pub fn to(value: Option<T>) -> Patch<T> {
        value.map_or(Patch::Clear, Patch::Set)
    }

    /// Sets the field when there is a value, else leaves it.
    pub fn set_some(value: Option<T>) -> Patch<T> {
        value.map_or(Patch::Keep, Patch::Set)
    }

    pub fn apply(self, field: &mut Option<T>) {
        match self {
            Patch::Keep => {}
            Patch::Set(v) => *field = Some(v),
            Patch::Clear => *field = None,
        }
    }
}

/// `null` clears, a value sets; an absent field is `Keep` through `#[serde(default)]`.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for Patch<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(d).map(Patch::to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default)]
    struct Change {
        #[serde(default)]
        note: Patch<String>,
    }

    #[test]
    fn absent_keeps_null_clears_a_value_sets() {
        let parse = |s: &str| serde_json::from_str::<Change>(s).unwrap().note;
        assert_eq!(parse("{}"), Patch::Keep);
        assert_eq!(parse(r#"{"note": null}"#), Patch::Clear);
        assert_eq!(parse(r#"{"note": "n"}"#), Patch::Set("n".into()));
        let mut field = Some("old".to_string());
        Patch::Keep.apply(&mut field);
        assert_eq!(field.as_deref(), Some("old"));
        Patch::Set("new".to_string()).apply(&mut field);
        assert_eq!(field.as_deref(), Some("new"));
        Patch::Clear.apply(&mut field);
        assert_eq!(field, None);
    }
}
