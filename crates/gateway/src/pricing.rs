//! Model prices and the cost of a request. The table ships in the repository (`prices.toml`) and entries in the
//! config's `[prices."MODEL"]` replace or add to it.
//!
//! Promise: costs are exact integer arithmetic in nano-dollars (prices are whole thousandths of a dollar per million
//! tokens, i.e. whole nano-dollars per token), both cache-write lifetimes are priced separately, and a model with no
//! matching entry has cost `None`, never a guess.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::keys::limits::glob;
use crate::store::tenants::Tokens;

/// The table shipped with the gateway.
const SHIPPED: &str = include_str!("../prices.toml");

pub use crate::config::ModelPrice;

#[derive(Debug, Deserialize)]
struct Shipped {
    prices: BTreeMap<String, ModelPrice>,
}

/// Nano-dollars per token for each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NanoPrice {
    input: i64,
    output: i64,
    cache_write_5m: i64,
    cache_write_1h: i64,
    cache_read: i64,
}

impl From<ModelPrice> for NanoPrice {
    fn from(p: ModelPrice) -> Self {
        // USD per million tokens × 1e9 nano / 1e6 tokens = × 1000 per token.
        let n = |usd: f64| (usd * 1000.0).round() as i64;
        NanoPrice {
            input: n(p.input),
            output: n(p.output),
            cache_write_5m: n(p.cache_write_5m),
            cache_write_1h: n(p.cache_write_1h),
            cache_read: n(p.cache_read),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    /// Patterns, longest first (the most specific match wins).
    entries: Vec<(Pattern, NanoPrice)>,
}

/// A model pattern (`*` matches any run of characters), with the form nearly every entry has told apart.
#[derive(Debug, Clone)]
enum Pattern {
    /// `PREFIX*` (one star, at the end): a model matches when it starts with the prefix — one comparison, where the
    /// glob walks byte by byte through the `claude-` every pattern and model share.
    Prefix(String),
    Glob(String),
}

impl Pattern {
    fn new(pattern: String) -> Pattern {
        match pattern.strip_suffix('*') {
            Some(prefix) if !prefix.contains('*') => Pattern::Prefix(prefix.to_string()),
            _ => Pattern::Glob(pattern),
        }
    }

    /// Whether `model` matches: what [`glob`] says.
    fn matches(&self, model: &str) -> bool {
        match self {
            Pattern::Prefix(prefix) => model.starts_with(prefix.as_str()),
            Pattern::Glob(pattern) => glob(pattern, model),
        }
    }
}

impl PriceTable {
    /// The shipped table with `overrides` on top.
    pub fn new(overrides: &BTreeMap<String, ModelPrice>) -> PriceTable {
        let mut all: BTreeMap<String, ModelPrice> = toml::from_str::<Shipped>(SHIPPED)
            .map(|s| s.prices)
            .unwrap_or_default();
        all.extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
        let mut entries: Vec<(String, NanoPrice)> = all
            .into_iter()
            .map(|(k, v)| (k, NanoPrice::from(v)))
            .collect();
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let entries = entries
            .into_iter()
            .map(|(k, v)| (Pattern::new(k), v))
            .collect();
        PriceTable { entries }
    }

    fn price(&self, model: &str) -> Option<&NanoPrice> {
        self.entries
            .iter()
            .find(|(pattern, _)| pattern.matches(model))
            .map(|(_, p)| p)
    }

    /// The cost in nano-dollars, `None` for a model without a price.
    pub fn cost_nanos(&self, model: &str, t: &Tokens) -> Option<i64> {
        let p = self.price(model)?;
        let n = |tokens: u64| i64::try_from(tokens).unwrap_or(i64::MAX);
        Some(
            n(t.input) * p.input
                + n(t.output) * p.output
                + n(t.cache_creation_5m) * p.cache_write_5m
                + n(t.cache_creation_1h) * p.cache_write_1h
                + n(t.cache_read) * p.cache_read,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A pattern matches the models the glob matches, whatever its form (prefix, stars elsewhere, none).
        #[test]
        fn a_pattern_matches_what_the_glob_matches(
            pattern in "(claude-|c|\\*)?[a-z0-9.*-]{0,8}\\*?",
            model in "(claude-)?[a-z0-9.-]{0,10}",
        ) {
            let p = Pattern::new(pattern.clone());
            proptest::prop_assert_eq!(p.matches(&model), glob(&pattern, &model), "{:?} {}", p, model);
            let with_prefix = format!("{}{model}", pattern.trim_end_matches('*'));
            proptest::prop_assert_eq!(p.matches(&with_prefix), glob(&pattern, &with_prefix));
        }
    }

    #[test]
    fn the_shipped_patterns_are_prefixes() {
        let table = PriceTable::new(&BTreeMap::new());
        assert!(!table.entries.is_empty());
        assert!(table
            .entries
            .iter()
            .all(|(p, _)| matches!(p, Pattern::Prefix(_))));
    }

    #[test]
    fn the_shipped_table_parses_and_prices_both_cache_write_lifetimes() {
        assert!(toml::from_str::<Shipped>(SHIPPED).is_ok());
        let table = PriceTable::new(&BTreeMap::new());
        let t = Tokens {
            input: 1000,
            output: 200,
            cache_creation_5m: 300,
            cache_creation_1h: 400,
            cache_read: 500,
        };
        // Sonnet 4.5: $3 in, $15 out, $3.75 5m write, $6 1h write, $0.30 read per million.
        let expected = 1000 * 3000 + 200 * 15000 + 300 * 3750 + 400 * 6000 + 500 * 300;
        assert_eq!(
            table.cost_nanos("claude-sonnet-4-5-20250929", &t),
            Some(expected)
        );
        assert_eq!(table.cost_nanos("gpt-4o", &t), None);
    }

    #[test]
    fn config_entries_override_and_the_longest_pattern_wins() {
        let mut o = BTreeMap::new();
        let p = ModelPrice {
            input: 1.0,
            output: 2.0,
            cache_write_5m: 0.0,
            cache_write_1h: 0.0,
            cache_read: 0.0,
        };
        o.insert("claude-sonnet-4-5-special".to_string(), p);
        let table = PriceTable::new(&o);
        let t = Tokens {
            input: 1,
            output: 1,
            ..Tokens::default()
        };
        assert_eq!(
            table.cost_nanos("claude-sonnet-4-5-special", &t),
            Some(3000)
        );
        assert_eq!(table.cost_nanos("claude-sonnet-4-5", &t), Some(18000));
    }
}
