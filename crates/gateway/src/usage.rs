//! Usage and cost per request: a [`Meter`] travels with each client request (and its response body) and, when the
//! last part of the request is gone, becomes one [`RequestRecord`] in a bounded in-memory batch. A background flush
//! writes the batch (rows, hourly rollups, key counters) in one transaction once a second — never on the request path.
//!
//! Promise: every request through [`crate::proxy::Proxy::forward`] yields exactly one record, with the tokens the
//! answer reported (streams: `message_start` then `message_delta`, cumulative; failover attempts before
//! `message_start` report none; an abandoned stream reports what arrived before the client left), priced by
//! [`PriceTable`] (unknown model → cost unknown).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::clock::SharedClock;
use crate::pricing::PriceTable;
use crate::store::tenants::{RequestRecord, Tokens, UsageBatch};
use crate::store::{SharedStore, StoreError};
use crate::tenants::ring::Admission;
use crate::tenants::{KeyRing, Tenant};

mod fields;
pub use fields::{answer_usage, event_usage, UsageFields};

/// Most records held between flushes; beyond it records are dropped and counted (`gateway_usage_dropped_total`).
const MAX_PENDING: usize = 200_000;

/// Most key names used as a metrics label; later keys are counted under `other`.
const MAX_KEY_LABELS: usize = 100;

/// The records waiting for the next flush, the price table and the keys.
#[derive(Debug)]
pub struct UsageLog {
    pending: Mutex<Vec<RequestRecord>>,
    /// The buffer of the interval before last, emptied: the next interval's records go into it (see
    /// [`UsageLog::take_rows`]).
    spare: Mutex<Vec<RequestRecord>>,
    dropped: AtomicU64,
    prices: PriceTable,
    ring: Arc<KeyRing>,
    clock: SharedClock,
    /// Each managed key's metric handles, by the key's name (at most [`MAX_KEY_LABELS`] names, then `other`).
    key_metrics:
        Mutex<std::collections::HashMap<String, Arc<KeyMetrics>, foldhash::fast::RandomState>>,
}

/// A managed key's counters in the metrics registry, made once per key name: a `counter!` with labels looks its
/// series up by hashing them, seven times a request.
#[derive(Debug)]
struct KeyMetrics {
    requests: metrics::Counter,
    /// By token kind, in [`TOKEN_KINDS`] order.
    tokens: [metrics::Counter; 5],
    cost_nanos: metrics::Counter,
}

const TOKEN_KINDS: [&str; 5] = [
    "input",
    "output",
    "cache_creation_5m",
    "cache_creation_1h",
    "cache_read",
];

impl KeyMetrics {
    fn new(label: &str) -> KeyMetrics {
        let key = label.to_string();
        KeyMetrics {
            requests: metrics::counter!("gateway_key_requests_total", "key" => key.clone()),
            tokens: TOKEN_KINDS.map(|kind| {
                metrics::counter!("gateway_key_tokens_total", "key" => key.clone(), "kind" => kind)
            }),
            cost_nanos: metrics::counter!("gateway_key_cost_nanodollars_total", "key" => key),
        }
    }
}

impl UsageLog {
    pub fn new(prices: PriceTable, ring: Arc<KeyRing>, clock: SharedClock) -> UsageLog {
        UsageLog {
            pending: Mutex::new(Vec::new()),
            spare: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
            prices,
            ring,
            clock,
            key_metrics: Mutex::new(Default::default()),
        }
    }

    pub fn ring(&self) -> &Arc<KeyRing> {
        &self.ring
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<RequestRecord>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, r: RequestRecord) {
        let mut rows = self.rows();
        if rows.len() >= MAX_PENDING {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("gateway_usage_dropped_total").increment(1);
            return;
        }
        rows.push(r);
    }

    /// The metrics label for a key: its name while fewer than [`MAX_KEY_LABELS`] names are in use, else `other`.
    /// The metric handles of managed key `name`: its own while fewer than [`MAX_KEY_LABELS`] names have some, else
    /// those labelled `other`.
    fn key_metrics(&self, name: &str) -> Arc<KeyMetrics> {
        let mut all = self.key_metrics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = all.get(name) {
            return m.clone();
        }
        let label = if all.len() < MAX_KEY_LABELS {
            name
        } else {
            "other"
        };
        // A key past the bound finds `other` without allocating its label again.
        if let Some(m) = all.get(label) {
            return m.clone();
        }
        let m = Arc::new(KeyMetrics::new(label));
        all.insert(label.to_string(), m.clone());
        m
    }

    /// Writes the records and key counters gathered since the last flush and reads back every replica's counters.
    /// On failure the batch is kept for the next flush (up to the bound).
    pub async fn flush(&self, store: &SharedStore) -> Result<usize, StoreError> {
        let Some(tenants) = store.tenants() else {
            self.rows().clear();
            return Ok(0);
        };
        let requests = self.take_rows();
        let keys = self.ring.take_batch();
        let batch = UsageBatch {
            requests,
            counters: keys.counters,
            in_flight: keys.in_flight,
            last_used: keys.last_used,
        };
        let n = batch.requests.len();
        // The store borrows the batch: on failure its records go back, uncopied, for the next flush.
        let written = tenants.record_usage(&batch).await;
        let mut taken = batch.requests;
        if let Err(e) = written {
            self.ring.restore();
            let mut rows = self.rows();
            let room = MAX_PENDING.saturating_sub(rows.len());
            rows.splice(0..0, taken.drain(..).take(room));
            drop(rows);
            self.recycle(taken);
            return Err(e);
        }
        self.recycle(taken);
        let (totals, in_flight) = tenants.counters(self.ring.query(self.now())).await?;
        self.ring.settle(&totals, &in_flight);
        Ok(n)
    }

    /// The records gathered so far; the spare buffer takes their place. Every connection worker pushes a record under
    /// the `pending` lock at the end of each request, so that vector must not grow there: growing reallocates and
    /// touches fresh memory, whose page faults (a transparent huge page zeroed, 13 ms on the benchmark machine) stall
    /// every worker waiting for the lock. The spare kept the capacity an earlier interval needed.
    fn take_rows(&self) -> Vec<RequestRecord> {
        let spare = std::mem::take(&mut *self.spare.lock().unwrap_or_else(|e| e.into_inner()));
        std::mem::replace(&mut *self.rows(), spare)
    }

    /// Keeps a flushed buffer, emptied, as the next spare; one far larger than its last interval needed (after a
    /// burst) is let go instead.
    fn recycle(&self, mut buffer: Vec<RequestRecord>) {
        let used = buffer.len();
        buffer.clear();
        if buffer.capacity() > 4 * used + 1024 {
            buffer = Vec::with_capacity(used);
        }
        *self.spare.lock().unwrap_or_else(|e| e.into_inner()) = buffer;
    }

    /// Deletes rows past retention.
    pub async fn prune(
        &self,
        store: &SharedStore,
        rows_days: u32,
        rollup_days: u32,
    ) -> Result<(), StoreError> {
        let Some(tenants) = store.tenants() else {
            return Ok(());
        };
        let now = self.now();
        let days = |d: u32| now - chrono::Duration::days(i64::from(d));
        tenants
            .prune_usage(days(rows_days), days(rollup_days), now)
            .await
    }
}

/// What is known about a request so far.
#[derive(Debug, Default)]
struct Seen {
    account: Option<(i64, String)>,
    status: u16,
    error_type: Option<String>,
    tokens: Tokens,
    ttfb: Option<Duration>,
}

#[derive(Debug)]
struct MeterInner {
    log: Arc<UsageLog>,
    started: Instant,
    at: DateTime<Utc>,
    tenant: Tenant,
    route: &'static str,
    model: String,
    stream: bool,
    seen: Mutex<Seen>,
    /// The key's concurrency slot: held until the response body is gone.
    _admission: Option<Admission>,
}

/// One request's usage in the making; clones go with the response body. Recorded when the last clone drops.
#[derive(Debug, Clone)]
pub struct Meter(Arc<MeterInner>);

/// What a request is, for its record.
#[derive(Debug)]
pub struct MeterSpec {
    pub tenant: Tenant,
    pub route: &'static str,
    pub model: Option<String>,
    pub stream: bool,
    pub admission: Option<Admission>,
}

impl Meter {
    pub fn new(log: Arc<UsageLog>, spec: MeterSpec) -> Meter {
        let at = log.now();
        Meter(Arc::new(MeterInner {
            log,
            started: Instant::now(),
            at,
            tenant: spec.tenant,
            route: spec.route,
            model: spec.model.unwrap_or_default(),
            stream: spec.stream,
            seen: Mutex::new(Seen::default()),
            _admission: spec.admission,
        }))
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.0.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The account of the attempt now running (the last one to call this served the answer).
    pub fn attempt(&self, account_id: i64, account: &str) {
        let mut s = self.seen();
        s.account = Some((account_id, account.to_string()));
        s.error_type = None;
    }

    /// The answer's head reached (or is about to reach) the client.
    pub fn first_byte(&self) {
        let mut s = self.seen();
        if s.ttfb.is_none() {
            s.ttfb = Some(self.0.started.elapsed());
        }
    }

    pub fn status(&self, status: u16) {
        self.seen().status = status;
    }

    pub fn error(&self, error_type: &str) {
        self.seen().error_type = Some(error_type.to_string());
    }

    pub fn add_tokens(&self, t: &Tokens) {
        self.seen().tokens.add(t);
    }
}

impl Drop for MeterInner {
    fn drop(&mut self) {
        let seen = std::mem::take(self.seen.get_mut().unwrap_or_else(|e| e.into_inner()));
        let cost = self.log.prices.cost_nanos(&self.model, &seen.tokens);
        let now = self.log.now();
        if let Tenant::Managed(k) = &self.tenant {
            k.record(seen.tokens.total(), cost, now);
        }
        let (account_id, account) = seen.account.unwrap_or_default();
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let record = RequestRecord {
            at: self.at,
            key_id: self.tenant.key_id().unwrap_or(0),
            key: self.tenant.name(),
            account_id,
            account,
            // The meter is going: its model moves into the record (the price was read above).
            model: std::mem::take(&mut self.model),
            route: self.route.to_string(),
            stream: self.stream,
            status: seen.status,
            error_type: seen.error_type,
            tokens: seen.tokens,
            latency_ms: millis(self.started.elapsed()),
            ttfb_ms: seen.ttfb.map(millis),
            cost_nanos: cost,
        };
        self.metrics(&record);
        self.log.push(record);
    }
}

impl MeterInner {
    fn metrics(&self, r: &RequestRecord) {
        let Tenant::Managed(k) = &self.tenant else {
            return;
        };
        let m = self.log.key_metrics(&k.key().name);
        m.requests.increment(1);
        let t = &r.tokens;
        let counts = [
            t.input,
            t.output,
            t.cache_creation_5m,
            t.cache_creation_1h,
            t.cache_read,
        ];
        for (counter, n) in m.tokens.iter().zip(counts) {
            counter.increment(n);
        }
        if let Some(c) = r.cost_nanos {
            m.cost_nanos.increment(u64::try_from(c).unwrap_or(0));
        }
    }
}

/// Sets the fields an Anthropic `usage` object carries (streams repeat them cumulatively, so later values replace
/// earlier ones; absent fields are kept). Cache writes come from `usage.cache_creation` (`ephemeral_5m_input_tokens`,
/// `ephemeral_1h_input_tokens`); a `cache_creation_input_tokens` without that breakdown counts as 5-minute writes
/// (the default lifetime).
pub fn merge_usage(t: &mut Tokens, usage: &UsageFields) {
    if let Some(v) = usage.input_tokens {
        t.input = v;
    }
    if let Some(v) = usage.output_tokens {
        t.output = v;
    }
    if let Some(v) = usage.cache_read_input_tokens {
        t.cache_read = v;
    }
    match (usage.cache_creation_5m, usage.cache_creation_1h) {
        (None, None) => {
            // `message_delta` repeats the total without the breakdown: keep the known split when it adds up.
            if let Some(total) = usage.cache_creation_input_tokens {
                if t.cache_creation_5m + t.cache_creation_1h != total {
                    t.cache_creation_1h = t.cache_creation_1h.min(total);
                    t.cache_creation_5m = total - t.cache_creation_1h;
                }
            }
        }
        (c5, c1) => {
            t.cache_creation_5m = c5.unwrap_or(0);
            t.cache_creation_1h = c1.unwrap_or(0);
        }
    }
}

/// The tokens of one whole `usage` object.
#[cfg(test)]
fn tokens_of(usage: &serde_json::Value) -> Tokens {
    let mut t = Tokens::default();
    merge_usage(&mut t, &fields_of(usage));
    t
}

/// A `usage` object's fields, read from a parsed tree.
#[cfg(test)]
fn fields_of(usage: &serde_json::Value) -> UsageFields {
    <UsageFields as serde::Deserialize>::deserialize(usage).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each key name gets its handles once; past MAX_KEY_LABELS names, new ones share `other`'s (the label set stays
    /// bounded whatever keys come and go).
    #[test]
    fn key_metric_handles_are_made_once_per_name_and_bounded() {
        let log = UsageLog::new(
            PriceTable::new(&Default::default()),
            Arc::new(KeyRing::new(&[])),
            Arc::new(crate::clock::SystemClock),
        );
        let first = log.key_metrics("k0");
        assert!(Arc::ptr_eq(&first, &log.key_metrics("k0")));
        for i in 1..MAX_KEY_LABELS {
            log.key_metrics(&format!("k{i}"));
        }
        let over = log.key_metrics("one-too-many");
        assert!(Arc::ptr_eq(&over, &log.key_metrics("another")));
        assert!(Arc::ptr_eq(&first, &log.key_metrics("k0")));
        assert_eq!(log.key_metrics.lock().unwrap().len(), MAX_KEY_LABELS + 1);
    }

    /// From the second flush on, each interval's records go into a buffer that already has the room the interval
    /// before last needed: no record pushed at the end of a request grows the vector under the lock every worker
    /// takes (on main the buffer started empty after every flush and grew under the lock, page faults included).
    #[tokio::test]
    async fn records_after_a_flush_go_into_a_buffer_with_room_kept_from_earlier_ones() {
        let dir = std::env::temp_dir().join(format!("cgw-usage-spare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: SharedStore =
            Arc::new(crate::store::sqlite::SqliteStore::open(&dir).await.unwrap());
        let clock: SharedClock = Arc::new(crate::clock::SystemClock);
        let log = Arc::new(UsageLog::new(
            PriceTable::new(&Default::default()),
            Arc::new(KeyRing::new(&[])),
            clock,
        ));
        let record = |n: usize| {
            for _ in 0..n {
                drop(Meter::new(
                    log.clone(),
                    MeterSpec {
                        tenant: Tenant::Static,
                        route: "/v1/messages",
                        model: Some("claude-sonnet-4-5".into()),
                        stream: false,
                        admission: None,
                    },
                ));
            }
        };
        for round in 0..4 {
            record(1000);
            assert_eq!(log.flush(&store).await.unwrap(), 1000, "round {round}");
            let rows = log.rows();
            assert!(rows.is_empty());
            if round > 0 {
                assert!(
                    rows.capacity() >= 1000,
                    "round {round}: {}",
                    rows.capacity()
                );
            }
        }
        // A burst's buffer is not kept forever: after quiet intervals the spare shrinks.
        record(10_000);
        log.flush(&store).await.unwrap();
        log.flush(&store).await.unwrap();
        log.flush(&store).await.unwrap();
        assert!(log.rows().capacity() < 10_000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A flush the store refuses keeps its records, unchanged and in order, ahead of the ones recorded since, and the
    /// next flush writes them all (the store borrows the batch; nothing is copied to keep it).
    #[tokio::test]
    async fn a_failed_flush_keeps_its_records_for_the_next() {
        use crate::store::tenants::RequestQuery;
        let dir = std::env::temp_dir().join(format!("cgw-usage-retry-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: SharedStore =
            Arc::new(crate::store::sqlite::SqliteStore::open(&dir).await.unwrap());
        let log = Arc::new(UsageLog::new(
            PriceTable::new(&Default::default()),
            Arc::new(KeyRing::new(&[])),
            Arc::new(crate::clock::SystemClock),
        ));
        let record = |model: &str| {
            drop(Meter::new(
                log.clone(),
                MeterSpec {
                    tenant: Tenant::Static,
                    route: "/v1/messages",
                    model: Some(model.into()),
                    stream: false,
                    admission: None,
                },
            ));
        };
        let models: Vec<String> = (0..40).map(|i| format!("model-{i}")).collect();
        for m in &models[..30] {
            record(m);
        }
        let pending = log.rows().clone();
        // Another connection takes the table away: the flush's insert fails.
        let other =
            sqlx::SqlitePool::connect(&format!("sqlite://{}", dir.join("gateway.db").display()))
                .await
                .unwrap();
        let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
        sqlx::query(sqlx::AssertSqlSafe(rename(
            "request_log",
            "request_log_away",
        )))
        .execute(&other)
        .await
        .unwrap();
        assert!(log.flush(&store).await.is_err());
        assert_eq!(*log.rows(), pending);
        for m in &models[30..] {
            record(m);
        }
        sqlx::query(sqlx::AssertSqlSafe(rename(
            "request_log_away",
            "request_log",
        )))
        .execute(&other)
        .await
        .unwrap();
        assert_eq!(log.flush(&store).await.unwrap(), 40);
        let tenants = store.tenants().unwrap();
        let mut written = tenants
            .recent_requests(RequestQuery {
                limit: 100,
                ..RequestQuery::default()
            })
            .await
            .unwrap();
        written.reverse();
        let written: Vec<&str> = written.iter().map(|r| r.model.as_str()).collect();
        assert_eq!(written, models);
        assert_eq!(log.flush(&store).await.unwrap(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn cache_writes_are_split_by_lifetime_from_the_breakdown() {
        let u = serde_json::json!({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 7,
            "cache_creation_input_tokens": 30,
            "cache_creation": {"ephemeral_5m_input_tokens": 10, "ephemeral_1h_input_tokens": 20}});
        let t = tokens_of(&u);
        assert_eq!(
            (
                t.input,
                t.output,
                t.cache_creation_5m,
                t.cache_creation_1h,
                t.cache_read
            ),
            (10, 5, 10, 20, 7)
        );
        let old = serde_json::json!({"input_tokens": 1, "cache_creation_input_tokens": 30});
        assert_eq!(tokens_of(&old).cache_creation_5m, 30);
        // A message_delta carrying only output keeps what message_start said.
        let mut t = tokens_of(&u);
        merge_usage(
            &mut t,
            &fields_of(&serde_json::json!({"output_tokens": 9, "cache_creation_input_tokens": 30})),
        );
        assert_eq!(
            (t.input, t.output, t.cache_creation_5m, t.cache_creation_1h),
            (10, 9, 10, 20)
        );
    }
}
