//! What the store keeps about client keys as tenants: the keys (hash and prefix, never the key), per-key counters
//! shared by replicas, the per-request usage log and its hourly rollups. [`TenantStore`] is implemented once for SQLite
//! and PostgreSQL (`store/tenants_sql.rs`); the in-memory test store has none ([`super::Store::tenants`] is `None`).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{StoreError, StoreFuture};
use crate::keys::{ClientKey, KeyId, NewKey};

/// Token counts of one request (or a sum of them). Cache writes are split by their lifetime, as Anthropic bills them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_creation_5m: u64,
    pub cache_creation_1h: u64,
    pub cache_read: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.input + self.output + self.cache_creation_5m + self.cache_creation_1h + self.cache_read
    }

    pub fn add(&mut self, o: &Tokens) {
        self.input += o.input;
        self.output += o.output;
        self.cache_creation_5m += o.cache_creation_5m;
        self.cache_creation_1h += o.cache_creation_1h;
        self.cache_read += o.cache_read;
    }
}

/// One client request, metadata only (never bodies or secrets). `key_id` 0 = a static config key or an open gateway;
/// `account_id` 0 = no account served it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestRecord {
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    pub key_id: KeyId,
    pub key: String,
    pub account_id: i64,
    pub account: String,
    pub model: String,
    pub route: String,
    pub stream: bool,
    pub status: u16,
    pub error_type: Option<String>,
    #[serde(flatten, serialize_with = "tokens_fields")]
    pub tokens: Tokens,
    pub latency_ms: u64,
    pub ttfb_ms: Option<u64>,
    /// `None` when the model has no price (never guessed).
    #[serde(rename = "cost_usd", serialize_with = "usd")]
    pub cost_nanos: Option<i64>,
}

fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::clock::rfc3339(*t))
}

fn usd<S: serde::Serializer>(n: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match n {
        Some(n) => s.serialize_f64(nanos_to_usd(*n)),
        None => s.serialize_none(),
    }
}

fn tokens_fields<S: serde::Serializer>(t: &Tokens, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(6))?;
    m.serialize_entry("input_tokens", &t.input)?;
    m.serialize_entry("output_tokens", &t.output)?;
    m.serialize_entry(
        "cache_creation_input_tokens",
        &(t.cache_creation_5m + t.cache_creation_1h),
    )?;
    m.serialize_entry("cache_creation_5m_input_tokens", &t.cache_creation_5m)?;
    m.serialize_entry("cache_creation_1h_input_tokens", &t.cache_creation_1h)?;
    m.serialize_entry("cache_read_input_tokens", &t.cache_read)?;
    m.end()
}

pub fn nanos_to_usd(n: i64) -> f64 {
    n as f64 / 1e9
}

/// What a key used in one window, to add to the shared counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterDelta {
    pub key_id: KeyId,
    pub window: Window,
    pub requests: u64,
    pub tokens: u64,
    pub cost_nanos: i64,
}

/// A counter window: a fixed minute (requests), a UTC day (tokens), a UTC month (cost), each by its start in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Minute(i64),
    Day(i64),
    Month(i64),
}

impl Window {
    pub fn kind(&self) -> &'static str {
        match self {
            Window::Minute(_) => "m",
            Window::Day(_) => "d",
            Window::Month(_) => "mo",
        }
    }

    pub fn start_ms(&self) -> i64 {
        match self {
            Window::Minute(s) | Window::Day(s) | Window::Month(s) => *s,
        }
    }

    pub fn parse(kind: &str, start: i64) -> Option<Window> {
        match kind {
            "m" => Some(Window::Minute(start)),
            "d" => Some(Window::Day(start)),
            "mo" => Some(Window::Month(start)),
            _ => None,
        }
    }
}

/// A window's totals over every replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterTotal {
    pub key_id: KeyId,
    pub window: Window,
    pub requests: u64,
    pub tokens: u64,
    pub cost_nanos: i64,
}

/// One flush of a replica: request rows (rolled up by hour as they are written), counter deltas, the replica's
/// in-flight requests per key and keys' last use.
#[derive(Debug, Clone, Default)]
pub struct UsageBatch {
    pub requests: Vec<RequestRecord>,
    pub counters: Vec<CounterDelta>,
    /// `(replica, key, in flight)`, replacing that replica's previous figure.
    pub in_flight: Vec<(i64, KeyId, u64)>,
    pub last_used: Vec<(KeyId, DateTime<Utc>)>,
}

/// The windows a replica reads back: current and previous minute, today, this month; in-flight figures of other
/// replicas updated since `in_flight_since`.
#[derive(Debug, Clone, Copy)]
pub struct CounterQuery {
    pub minute: i64,
    pub previous_minute: i64,
    pub day: i64,
    pub month: i64,
    pub replica: i64,
    pub in_flight_since: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Key,
    Account,
    Model,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Bucket {
    Hour,
    Day,
}

#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub group_by: GroupBy,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket: Option<Bucket>,
}

/// One group of usage (per key, account or model, optionally per bucket).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    /// The key, account or model name.
    pub name: String,
    /// Start of the hour or day (RFC 3339), when bucketed.
    pub bucket: Option<String>,
    pub requests: u64,
    #[serde(flatten, serialize_with = "tokens_fields")]
    pub tokens: Tokens,
    /// Cost of the requests whose model has a price.
    #[serde(serialize_with = "usd_plain")]
    pub cost_nanos: i64,
    /// Requests whose cost is unknown (a model without a price).
    pub cost_unknown_requests: u64,
}

fn usd_plain<S: serde::Serializer>(n: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(nanos_to_usd(*n))
}

#[derive(Debug, Clone, Default)]
pub struct RequestQuery {
    pub key: Option<String>,
    pub account: Option<String>,
    pub status: Option<u16>,
    pub limit: u32,
}

pub trait TenantStore: Send + Sync {
    fn list_keys(&self) -> StoreFuture<'_, Vec<ClientKey>>;
    fn insert_key(&self, key: NewKey) -> StoreFuture<'_, ClientKey>;
    /// Writes name, note, enabled, limits and expiry of `key` (by id).
    fn update_key(&self, key: ClientKey) -> StoreFuture<'_, ClientKey>;
    fn remove_key(&self, id: KeyId) -> StoreFuture<'_, ()>;
    /// Writes one flush in one transaction.
    fn record_usage<'a>(&'a self, batch: &'a UsageBatch) -> StoreFuture<'a, ()>;
    /// Counter totals of the windows in `q` over every replica, and other replicas' recent in-flight figures.
    fn counters(&self, q: CounterQuery) -> StoreFuture<'_, (Vec<CounterTotal>, Vec<InFlight>)>;
    fn usage(&self, q: UsageQuery) -> StoreFuture<'_, Vec<UsageRow>>;
    fn recent_requests(&self, q: RequestQuery) -> StoreFuture<'_, Vec<RequestRecord>>;
    /// Deletes request rows older than `requests_before`, rollups older than `rollups_before` and stale counters.
    fn prune_usage(
        &self,
        requests_before: DateTime<Utc>,
        rollups_before: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, ()>;
}

/// Other replicas' in-flight requests of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    pub key_id: KeyId,
    pub requests: u64,
}

/// Finds a key by id (all digits) or name.
pub async fn find_key(store: &dyn TenantStore, id_or_name: &str) -> Result<ClientKey, StoreError> {
    let by_id = id_or_name.parse::<KeyId>().ok();
    store
        .list_keys()
        .await?
        .into_iter()
        .find(|k| Some(k.id) == by_id || k.name == id_or_name)
        .ok_or_else(|| StoreError::KeyNotFound(id_or_name.to_string()))
}
