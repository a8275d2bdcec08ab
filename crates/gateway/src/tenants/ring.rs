//! The keys a replica knows, who a presented key is, and whether its limits let one more request in.
//!
//! The table mirrors the store (reloaded when the change counter moves: at once on PostgreSQL `NOTIFY`, else within
//! the 1-second poll), so revoking, disabling or re-limiting a key reaches every replica within a second.
//!
//! Counting across replicas: each replica counts its own admissions, tokens and cost at once (so one replica never
//! exceeds a limit by itself), writes them to the store once a second and reads back every replica's totals. Another
//! replica's requests are therefore seen at most one flush (plus one store round trip) late; README "Keys, limits and
//! usage" states the overshoot this allows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Datelike, Utc};

use crate::error::GatewayError;
use crate::keys::limits::{self, MINUTE_MS};
use crate::keys::{hash, memo, ClientKey, KeyId};
use crate::store::tenants::{
    CounterDelta, CounterQuery, CounterTotal, InFlight, TenantStore, Window,
};
use crate::store::StoreError;

/// Who sent a request, attached to the request's extensions by the client-auth middleware.
#[derive(Debug, Clone)]
pub enum Tenant {
    /// No client keys at all (loopback only).
    Open,
    /// A static key from `client_keys` in the config: no limits.
    Static,
    Managed(Arc<KeyState>),
}

impl Tenant {
    /// The managed key's id (`None` for static keys and an open gateway).
    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            Tenant::Managed(k) => Some(k.id),
            Tenant::Open | Tenant::Static => None,
        }
    }

    /// The name usage is recorded under: the key's name, `config` or `open`.
    pub fn name(&self) -> String {
        match self {
            Tenant::Open => "open".into(),
            Tenant::Static => "config".into(),
            Tenant::Managed(k) => k.key().name.clone(),
        }
    }
}

/// One managed key at runtime: its stored row (replaced on reload) and its counters.
#[derive(Debug)]
pub struct KeyState {
    pub id: KeyId,
    key: RwLock<Arc<ClientKey>>,
    in_flight: AtomicU64,
    counters: Mutex<Counters>,
    last_used: AtomicI64,
}

/// The ring's maps: looked up on every request (a key's table entry, its counters' windows), where SipHash cost more
/// than the rest of the lookup. Their keys are SHA-256 digests and windows, not values a client picks freely.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A window's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    requests: u64,
    tokens: u64,
    cost_nanos: i64,
}

impl Counts {
    fn add(&mut self, o: Counts) {
        self.requests += o.requests;
        self.tokens += o.tokens;
        self.cost_nanos += o.cost_nanos;
    }
}

#[derive(Debug, Default)]
struct Counters {
    /// Every replica's totals as last read back (ours included up to the last flush).
    shared: FastMap<Window, Counts>,
    /// Ours, not yet written.
    pending: FastMap<Window, Counts>,
    /// Ours, written but not yet read back.
    flushing: FastMap<Window, Counts>,
    /// Other replicas' in-flight requests, as last read.
    others_in_flight: u64,
}

impl Counters {
    fn seen(&self, w: Window) -> Counts {
        let mut c = self.shared.get(&w).copied().unwrap_or_default();
        for m in [&self.pending, &self.flushing] {
            if let Some(x) = m.get(&w) {
                c.add(*x);
            }
        }
        c
    }

    fn add(&mut self, w: Window, c: Counts) {
        self.pending.entry(w).or_default().add(c);
    }
}

/// Holds one of a key's concurrency slots until dropped (when the response body ends).
#[derive(Debug)]
pub struct Admission(Arc<KeyState>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

const DAY_MS: i64 = 86_400_000;

/// [`limits::day_start`] of `now` in Unix milliseconds, by arithmetic (every request counts against its day: the
/// calendar conversion cost more than the rest of the count). Chrono's UTC days are all 86,400 s long.
fn day_ms(now: DateTime<Utc>) -> i64 {
    now.timestamp().div_euclid(86_400) * DAY_MS
}

/// [`limits::month_start`] of `now` in Unix milliseconds: the start of its day less the days before it in its month.
fn month_ms(now: DateTime<Utc>) -> i64 {
    day_ms(now) - i64::from(now.day0()) * DAY_MS
}

fn key_limit(limit: &'static str, message: String, retry_after_secs: u64) -> GatewayError {
    GatewayError::KeyLimit {
        limit,
        message,
        retry_after_secs,
    }
}

impl KeyState {
    fn new(key: ClientKey) -> Arc<KeyState> {
        Arc::new(KeyState {
            id: key.id,
            key: RwLock::new(Arc::new(key)),
            in_flight: AtomicU64::new(0),
            counters: Mutex::new(Counters::default()),
            last_used: AtomicI64::new(0),
        })
    }

    pub fn key(&self) -> Arc<ClientKey> {
        self.key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Lets one more request in, or says which limit refuses it and when that limit resets. Counts the request.
    pub fn admit(
        self: &Arc<Self>,
        model: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Admission, GatewayError> {
        let key = self.key();
        let l = &key.limits;
        if let Some(m) = model {
            if !l.allows_model(m) {
                return Err(GatewayError::Forbidden(format!(
                    "client key {:?} may not use model {m:?} (allowed: {})",
                    key.name,
                    l.models.join(", ")
                )));
            }
        }
        let mut c = self.counters();
        let minute = limits::minute_start(now);
        if let Some(limit) = l.rpm {
            let prev = c.seen(Window::Minute(minute - MINUTE_MS)).requests;
            let cur = c.seen(Window::Minute(minute)).requests;
            if limits::sliding_count(prev, cur, now) >= limit as f64 {
                let wait = limits::rpm_retry_after(prev, cur, limit, now);
                return Err(key_limit("rpm", format!("client key {:?} is over its limit of {limit} requests per minute; retry in {wait} s", key.name), wait));
            }
        }
        if let Some(limit) = l.tokens_per_day {
            let used = c.seen(Window::Day(day_ms(now))).tokens;
            if used >= limit {
                let reset = limits::day_start(now) + chrono::Duration::days(1);
                return Err(key_limit("tokens_per_day", format!("client key {:?} used {used} of its {limit} tokens per day; the limit resets at {}", key.name, crate::clock::rfc3339(reset)), limits::secs_until(now, reset)));
            }
        }
        if let Some(budget) = l.nanos_per_month() {
            let used = c.seen(Window::Month(month_ms(now))).cost_nanos;
            if used >= budget {
                let reset = limits::next_month_start(now);
                return Err(key_limit("usd_per_month", format!("client key {:?} spent ${:.2} of its ${:.2} per month; the limit resets at {}", key.name, used as f64 / 1e9, budget as f64 / 1e9, crate::clock::rfc3339(reset)), limits::secs_until(now, reset)));
            }
        }
        if let Some(limit) = l.concurrency {
            let busy = self.in_flight() + c.others_in_flight;
            if busy >= limit {
                return Err(key_limit("concurrency", format!("client key {:?} already has {busy} requests in flight, its limit is {limit}; retry when one ends", key.name), 1));
            }
        }
        c.add(
            Window::Minute(minute),
            Counts {
                requests: 1,
                ..Counts::default()
            },
        );
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.last_used
            .fetch_max(now.timestamp_millis(), Ordering::AcqRel);
        Ok(Admission(Arc::clone(self)))
    }

    /// Counts a finished request's tokens (every kind, cache included) and cost against the day and month.
    pub fn record(&self, tokens: u64, cost_nanos: Option<i64>, now: DateTime<Utc>) {
        let mut c = self.counters();
        c.add(
            Window::Day(day_ms(now)),
            Counts {
                tokens,
                ..Counts::default()
            },
        );
        if let Some(cost) = cost_nanos {
            c.add(
                Window::Month(month_ms(now)),
                Counts {
                    cost_nanos: cost,
                    ..Counts::default()
                },
            );
        }
    }
}

/// What a flush writes for the keys, and how to settle it.
#[derive(Debug, Default)]
pub struct KeyBatch {
    pub counters: Vec<CounterDelta>,
    pub in_flight: Vec<(i64, KeyId, u64)>,
    pub last_used: Vec<(KeyId, DateTime<Utc>)>,
}

/// A key's use of its budgets (shares: 1.0 = the whole budget).
#[derive(Debug, Clone)]
pub struct BudgetUse {
    pub key: Arc<ClientKey>,
    pub day: Option<f64>,
    pub month: Option<f64>,
}

#[derive(Debug)]
pub struct KeyRing {
    /// SHA-256 of each static `client_keys` entry.
    statics: Vec<String>,
    table: RwLock<Arc<FastMap<String, Arc<KeyState>>>>,
    seen_seq: AtomicI64,
    /// The [`memo::Generation`] of the table's load: the key digests remembered under another are forgotten.
    generation: AtomicU64,
    /// This process among the replicas (its in-flight figures are stored under it).
    replica: i64,
}

/// Compares secrets (here: hashes) in time independent of where they differ.
pub fn secret_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl KeyRing {
    pub fn new(static_keys: &[String]) -> KeyRing {
        KeyRing {
            statics: static_keys.iter().map(|k| hash(k)).collect(),
            table: RwLock::new(Arc::new(FastMap::default())),
            seen_seq: AtomicI64::new(-1),
            generation: AtomicU64::new(memo::Generation::next().raw()),
            replica: rand::random::<i64>().abs(),
        }
    }

    /// Each managed key's use of its budgets as this replica sees them (every replica's totals plus its own pending):
    /// the key, tokens today / `tokens_per_day`, spend this month / `usd_per_month` (`None` without that limit).
    pub fn budget_use(&self, now: DateTime<Utc>) -> Vec<BudgetUse> {
        self.table()
            .values()
            .map(|s| {
                let key = s.key();
                let c = s.counters();
                let day = key
                    .limits
                    .tokens_per_day
                    .filter(|l| *l > 0)
                    .map(|l| c.seen(Window::Day(day_ms(now))).tokens as f64 / l as f64);
                let month = key
                    .limits
                    .nanos_per_month()
                    .filter(|b| *b > 0)
                    .map(|b| c.seen(Window::Month(month_ms(now))).cost_nanos as f64 / b as f64);
                drop(c);
                BudgetUse { key, day, month }
            })
            .collect()
    }

    fn table(&self) -> Arc<FastMap<String, Arc<KeyState>>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether any key (static or managed) exists; without one the gateway is open (loopback only).
    pub fn is_open(&self) -> bool {
        self.statics.is_empty() && self.table().is_empty()
    }

    /// Who presented `key`, or why they are refused.
    pub fn authenticate(
        &self,
        presented: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Tenant, GatewayError> {
        if self.is_open() {
            return Ok(Tenant::Open);
        }
        let Some(presented) = presented else {
            return Err(GatewayError::Unauthorized(
                "missing client key: send it as x-api-key or Authorization: Bearer".into(),
            ));
        };
        let generation = memo::Generation::from_raw(self.generation.load(Ordering::Acquire));
        let (digest, remembered) = memo::digest(presented, generation);
        let h = digest.as_str();
        let known = || {
            if !remembered {
                memo::remember(presented, &digest, generation);
            }
        };
        if self
            .statics
            .iter()
            .fold(false, |found, s| found | secret_eq(s, h))
        {
            known();
            return Ok(Tenant::Static);
        }
        let table = self.table();
        let Some(state) = table.get(h).filter(|s| secret_eq(&s.key().hash, h)) else {
            return Err(GatewayError::Unauthorized("invalid client key".into()));
        };
        known();
        let key = state.key();
        if !key.enabled {
            return Err(GatewayError::Unauthorized(format!(
                "client key {:?} is disabled",
                key.name
            )));
        }
        if key.expired(now) {
            let at = key
                .expires_at
                .map(crate::clock::rfc3339)
                .unwrap_or_default();
            return Err(GatewayError::Unauthorized(format!(
                "client key {:?} expired at {at}",
                key.name
            )));
        }
        Ok(Tenant::Managed(Arc::clone(state)))
    }

    /// Reloads the keys when the store's change counter moved. Counters of keys that stay are kept.
    pub async fn sync(&self, seq: i64, store: &dyn TenantStore) -> Result<bool, StoreError> {
        if self.seen_seq.load(Ordering::Acquire) == seq {
            return Ok(false);
        }
        let keys = store.list_keys().await?;
        let current = self.table();
        let by_id: HashMap<KeyId, &Arc<KeyState>> = current.values().map(|s| (s.id, s)).collect();
        let mut next = FastMap::with_capacity_and_hasher(keys.len(), Default::default());
        for key in keys {
            let h = key.hash.clone();
            let state = match by_id.get(&key.id) {
                Some(s) => {
                    *s.key.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                    Arc::clone(s)
                }
                None => KeyState::new(key),
            };
            next.insert(h, state);
        }
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        self.generation
            .store(memo::Generation::next().raw(), Ordering::Release);
        self.seen_seq.store(seq, Ordering::Release);
        Ok(true)
    }

    /// Moves every key's pending counts into its flushing set and returns them as one batch.
    pub fn take_batch(&self) -> KeyBatch {
        let mut batch = KeyBatch::default();
        for s in self.table().values() {
            let mut c = s.counters();
            let pending = std::mem::take(&mut c.pending);
            for (w, n) in pending {
                batch.counters.push(CounterDelta {
                    key_id: s.id,
                    window: w,
                    requests: n.requests,
                    tokens: n.tokens,
                    cost_nanos: n.cost_nanos,
                });
                c.flushing.entry(w).or_default().add(n);
            }
            if s.key().limits.concurrency.is_some() {
                batch.in_flight.push((self.replica, s.id, s.in_flight()));
            }
            let used = s.last_used.swap(0, Ordering::AcqRel);
            if let Some(t) = (used > 0)
                .then(|| crate::clock::from_millis(used))
                .flatten()
            {
                batch.last_used.push((s.id, t));
            }
        }
        batch
    }

    /// The write failed: the flushing counts go back to pending for the next flush.
    pub fn restore(&self) {
        for s in self.table().values() {
            let mut c = s.counters();
            let flushing = std::mem::take(&mut c.flushing);
            for (w, n) in flushing {
                c.add(w, n);
            }
        }
    }

    /// The counter windows to read back at `now`.
    pub fn query(&self, now: DateTime<Utc>) -> CounterQuery {
        let minute = limits::minute_start(now);
        CounterQuery {
            minute,
            previous_minute: minute - MINUTE_MS,
            day: day_ms(now),
            month: month_ms(now),
            replica: self.replica,
            in_flight_since: now - chrono::Duration::seconds(5),
        }
    }

    /// Adopts every replica's totals (which include what this replica just wrote).
    pub fn settle(&self, totals: &[CounterTotal], in_flight: &[InFlight]) {
        let mut by_key: HashMap<KeyId, FastMap<Window, Counts>> = HashMap::new();
        for t in totals {
            by_key.entry(t.key_id).or_default().insert(
                t.window,
                Counts {
                    requests: t.requests,
                    tokens: t.tokens,
                    cost_nanos: t.cost_nanos,
                },
            );
        }
        let others: HashMap<KeyId, u64> =
            in_flight.iter().map(|f| (f.key_id, f.requests)).collect();
        for s in self.table().values() {
            let mut c = s.counters();
            c.shared = by_key.remove(&s.id).unwrap_or_default();
            c.flushing.clear();
            c.others_in_flight = others.get(&s.id).copied().unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The day and month a request counts against are the calendar's, at any moment chrono can name (leap seconds
        /// included).
        #[test]
        fn the_day_and_month_are_the_calendars(
            secs in -8_000_000_000_000i64..8_000_000_000_000,
            nanos in 0u32..2_000_000_000,
        ) {
            let nanos = if secs.rem_euclid(60) == 59 { nanos } else { nanos % 1_000_000_000 };
            let Some(now) = DateTime::from_timestamp(secs, nanos) else {
                return Ok(());
            };
            proptest::prop_assert_eq!(day_ms(now), limits::day_start(now).timestamp_millis(), "{}", now);
            proptest::prop_assert_eq!(month_ms(now), limits::month_start(now).timestamp_millis(), "{}", now);
        }
    }
    use crate::keys::{KeyLimits, NewKey};

    fn state(limits: KeyLimits) -> Arc<KeyState> {
        let (k, _) = NewKey::generate("k".into(), None, limits, None);
        let now = crate::clock::system_now();
        KeyState::new(ClientKey {
            id: 1,
            name: k.name,
            prefix: k.prefix,
            hash: k.hash,
            note: None,
            enabled: true,
            limits: k.limits,
            expires_at: None,
            created_at: now,
            updated_at: now,
            last_used_at: None,
        })
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn the_request_after_the_rpm_limit_is_refused_with_a_retry_after() {
        let s = state(KeyLimits {
            rpm: Some(5),
            ..KeyLimits::default()
        });
        let t = at("2026-01-01T00:00:10Z");
        let held: Vec<_> = (0..5).map(|_| s.admit(None, t).unwrap()).collect();
        drop(held);
        match s.admit(None, t) {
            Err(GatewayError::KeyLimit {
                limit: "rpm",
                retry_after_secs,
                ..
            }) => assert!(retry_after_secs >= 50),
            other => panic!("expected an rpm refusal, got {other:?}"),
        }
    }

    #[test]
    fn concurrency_counts_requests_until_their_admission_drops() {
        let s = state(KeyLimits {
            concurrency: Some(2),
            ..KeyLimits::default()
        });
        let t = crate::clock::system_now();
        let a = s.admit(None, t).unwrap();
        let _b = s.admit(None, t).unwrap();
        assert!(matches!(
            s.admit(None, t),
            Err(GatewayError::KeyLimit {
                limit: "concurrency",
                ..
            })
        ));
        drop(a);
        assert!(s.admit(None, t).is_ok());
    }

    #[test]
    fn spend_stops_the_key_once_the_month_budget_is_reached_until_next_month() {
        let s = state(KeyLimits {
            usd_per_month: Some(0.01),
            ..KeyLimits::default()
        });
        let t = at("2026-03-31T12:00:00Z");
        drop(s.admit(None, t).unwrap());
        s.record(100, Some(10_000_000), t);
        match s.admit(None, t) {
            Err(GatewayError::KeyLimit {
                limit: "usd_per_month",
                retry_after_secs,
                ..
            }) => assert_eq!(retry_after_secs, 12 * 3600),
            other => panic!("expected a spend refusal, got {other:?}"),
        }
        assert!(s.admit(None, at("2026-04-01T00:00:01Z")).is_ok());
    }

    #[test]
    fn other_replicas_counts_are_adopted_and_ours_are_not_counted_twice() {
        let ring = KeyRing::new(&[]);
        let s = state(KeyLimits {
            rpm: Some(5),
            ..KeyLimits::default()
        });
        *ring.table.write().unwrap() =
            Arc::new(FastMap::from_iter([(s.key().hash.clone(), Arc::clone(&s))]));
        let t = at("2026-01-01T00:00:10Z");
        for _ in 0..2 {
            drop(s.admit(None, t).unwrap());
        }
        let batch = ring.take_batch();
        assert_eq!(batch.counters.iter().map(|c| c.requests).sum::<u64>(), 2);
        // The store now holds ours (2) and another replica's (3).
        let minute = limits::minute_start(t);
        ring.settle(
            &[CounterTotal {
                key_id: 1,
                window: Window::Minute(minute),
                requests: 5,
                tokens: 0,
                cost_nanos: 0,
            }],
            &[],
        );
        assert!(matches!(
            s.admit(None, t),
            Err(GatewayError::KeyLimit { limit: "rpm", .. })
        ));
    }

    /// The digest memo holds only keys that matched, and a reload that removes a key forgets it: the key is refused
    /// and its text is no longer remembered.
    #[tokio::test]
    async fn only_matching_keys_are_remembered_and_a_removed_key_is_forgotten() {
        let dir = std::env::temp_dir().join(format!("cgw-ring-memo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = crate::store::sqlite::SqliteStore::open(&dir).await.unwrap();
        let (new, secret) = NewKey::generate("k".into(), None, KeyLimits::default(), None);
        let stored = store.insert_key(new).await.unwrap();
        let ring = KeyRing::new(&["sk-static-memo".into()]);
        assert!(ring.sync(1, &store).await.unwrap());
        let now = crate::clock::system_now();

        assert!(matches!(
            ring.authenticate(Some(&secret.0), now),
            Ok(Tenant::Managed(_))
        ));
        assert!(memo::remembers(&secret.0));
        assert!(matches!(
            ring.authenticate(Some(&secret.0), now),
            Ok(Tenant::Managed(_))
        ));
        assert!(matches!(
            ring.authenticate(Some("sk-static-memo"), now),
            Ok(Tenant::Static)
        ));
        assert!(memo::remembers("sk-static-memo"));
        assert!(ring.authenticate(Some("sk-guess"), now).is_err());
        assert!(!memo::remembers("sk-guess"));

        store.remove_key(stored.id).await.unwrap();
        assert!(ring.sync(2, &store).await.unwrap());
        assert!(ring.authenticate(Some(&secret.0), now).is_err());
        assert!(
            !memo::remembers(&secret.0),
            "a removed key's text stayed in the memo"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_model_outside_the_globs_is_forbidden() {
        let s = state(KeyLimits {
            models: vec!["claude-haiku-*".into()],
            ..KeyLimits::default()
        });
        assert!(matches!(
            s.admit(Some("claude-opus-4-5"), crate::clock::system_now()),
            Err(GatewayError::Forbidden(_))
        ));
        assert!(s
            .admit(Some("claude-haiku-4-5"), crate::clock::system_now())
            .is_ok());
    }
}
