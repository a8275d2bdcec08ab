//! The SQL of [`TenantStore`](super::tenants::TenantStore), written once for SQLite and PostgreSQL like
//! `store/sql.rs`. Key changes bump the change counter (replicas reload keys within a second); usage writes do not.

pub const SELECT_KEYS: &str =
    "SELECT id, name, prefix, hash, note, enabled, limits, expires_at_ms, created_at_ms, \
     updated_at_ms, last_used_at_ms FROM client_keys ORDER BY id";
pub const SELECT_KEY: &str =
    "SELECT id, name, prefix, hash, note, enabled, limits, expires_at_ms, created_at_ms, \
     updated_at_ms, last_used_at_ms FROM client_keys WHERE id = ?";
pub const INSERT_KEY: &str =
    "INSERT INTO client_keys (name, prefix, hash, note, enabled, limits, expires_at_ms, \
     created_at_ms, updated_at_ms) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?) RETURNING id";
pub const UPDATE_KEY: &str =
    "UPDATE client_keys SET name = ?, note = ?, enabled = ?, limits = ?, expires_at_ms = ?, \
     updated_at_ms = ? WHERE id = ?";
pub const DELETE_KEY: &str = "DELETE FROM client_keys WHERE id = ?";
pub const TOUCH_KEY: &str = "UPDATE client_keys SET last_used_at_ms = ? WHERE id = ? \
     AND (last_used_at_ms IS NULL OR last_used_at_ms < ?)";
/// The request-log insert, completed with `VALUES (…), (…), …` for up to [`super::sql::INSERT_CHUNK`] records: one
/// statement per chunk ([`super::sql::insert_chunks`]), not one round trip to the database per record (a flush carries every request of the last
/// second).
pub const INSERT_REQUESTS: &str = "INSERT INTO request_log (at_ms, key_id, key_name, account_id, account_name, model, \
     route, stream, status, error_type, input_tokens, output_tokens, cache_creation_5m, cache_creation_1h, \
     cache_read_tokens, latency_ms, ttfb_ms, cost_nanos) ";
/// Columns of one request-log row.
pub const REQUEST_FIELDS: usize = 18;

/// One text column's values as shared strings: a value equal to one of the last few is the same allocation, so binding
/// it costs a reference count, not a copy (SQLite's arguments own their text; a flush's rows mostly repeat the key,
/// account, model and route).
#[derive(Debug, Default)]
pub struct SharedText(Vec<std::sync::Arc<str>>);

impl SharedText {
    /// Distinct values remembered per column (a linear search: short strings, few of them).
    const KEPT: usize = 4;

    pub fn get(&mut self, s: &str) -> std::sync::Arc<str> {
        if let Some(a) = self.0.iter().find(|a| ***a == *s) {
            return a.clone();
        }
        let a: std::sync::Arc<str> = s.into();
        if self.0.len() == Self::KEPT {
            self.0.remove(0);
        }
        self.0.push(a.clone());
        a
    }
}

/// The shared text of one flush's text columns.
#[derive(Debug, Default)]
pub struct RequestTexts {
    pub key: SharedText,
    pub account: SharedText,
    pub model: SharedText,
    pub route: SharedText,
    pub error_type: SharedText,
}

/// The request-log insert of `rows` records with `?` placeholders (numbered by the backend's `$q` for PostgreSQL):
/// the text `QueryBuilder::push_values` wrote, written once per chunk size instead of placeholder by placeholder on
/// every flush.
pub fn insert_requests_sql(rows: usize) -> String {
    format!(
        "{INSERT_REQUESTS}VALUES {}",
        super::sql::placeholder_rows(rows, REQUEST_FIELDS)
    )
}

pub const UPSERT_HOURLY: &str = "INSERT INTO usage_hourly (hour_ms, key_id, key_name, account_id, account_name, model, \
     requests, input_tokens, output_tokens, cache_creation_5m, cache_creation_1h, cache_read_tokens, cost_nanos, \
     cost_unknown) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (hour_ms, key_id, account_id, model) DO UPDATE SET key_name = excluded.key_name, \
     account_name = excluded.account_name, requests = usage_hourly.requests + excluded.requests, \
     input_tokens = usage_hourly.input_tokens + excluded.input_tokens, \
     output_tokens = usage_hourly.output_tokens + excluded.output_tokens, \
     cache_creation_5m = usage_hourly.cache_creation_5m + excluded.cache_creation_5m, \
     cache_creation_1h = usage_hourly.cache_creation_1h + excluded.cache_creation_1h, \
     cache_read_tokens = usage_hourly.cache_read_tokens + excluded.cache_read_tokens, \
     cost_nanos = usage_hourly.cost_nanos + excluded.cost_nanos, \
     cost_unknown = usage_hourly.cost_unknown + excluded.cost_unknown";
pub const ADD_COUNTER: &str = "INSERT INTO key_counters (key_id, kind, start_ms, requests, tokens, cost_nanos, \
     updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key_id, kind, start_ms) DO UPDATE SET \
     requests = key_counters.requests + excluded.requests, tokens = key_counters.tokens + excluded.tokens, \
     cost_nanos = key_counters.cost_nanos + excluded.cost_nanos, updated_ms = excluded.updated_ms";
pub const SET_IN_FLIGHT: &str =
    "INSERT INTO key_counters (key_id, kind, start_ms, requests, tokens, cost_nanos, \
     updated_ms) VALUES (?, 'c', ?, ?, 0, 0, ?) ON CONFLICT (key_id, kind, start_ms) DO UPDATE SET \
     requests = excluded.requests, updated_ms = excluded.updated_ms";
pub const SELECT_COUNTERS: &str = "SELECT key_id, kind, start_ms, requests, tokens, cost_nanos FROM key_counters \
     WHERE (kind = 'm' AND start_ms >= ?) OR (kind = 'd' AND start_ms = ?) OR (kind = 'mo' AND start_ms = ?)";
pub const SELECT_IN_FLIGHT: &str =
    "SELECT key_id, CAST(SUM(requests) AS BIGINT) FROM key_counters \
     WHERE kind = 'c' AND start_ms <> ? AND updated_ms >= ? GROUP BY key_id";
pub const PRUNE_REQUESTS: &str = "DELETE FROM request_log WHERE at_ms < ?";
pub const PRUNE_ROLLUPS: &str = "DELETE FROM usage_hourly WHERE hour_ms < ?";
pub const PRUNE_COUNTERS: &str = "DELETE FROM key_counters WHERE (kind = 'm' AND start_ms < ?) \
     OR (kind = 'd' AND start_ms < ?) OR (kind = 'mo' AND start_ms < ?) OR (kind = 'c' AND updated_ms < ?)";
pub const REQUEST_COLUMNS: &str = "at_ms, key_id, key_name, account_id, account_name, model, route, stream, status, \
     error_type, input_tokens, output_tokens, cache_creation_5m, cache_creation_1h, cache_read_tokens, latency_ms, \
     ttfb_ms, cost_nanos";

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 86_400_000;

pub fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The `GROUP BY` column and bucket expression of a usage query (from enums, never from client text).
pub fn usage_sql(q: &super::tenants::UsageQuery) -> String {
    use super::tenants::{Bucket, GroupBy};
    let name = match q.group_by {
        GroupBy::Key => "key_name",
        GroupBy::Account => "account_name",
        GroupBy::Model => "model",
    };
    let bucket = match q.bucket {
        Some(Bucket::Hour) => "hour_ms".to_string(),
        Some(Bucket::Day) => format!("(hour_ms / {DAY_MS}) * {DAY_MS}"),
        None => "CAST(0 AS BIGINT)".to_string(),
    };
    let group = if q.bucket.is_some() { "1, 2" } else { "1" };
    format!(
        "SELECT {name} AS name, {bucket} AS bucket, CAST(SUM(requests) AS BIGINT), CAST(SUM(input_tokens) AS BIGINT), \
         CAST(SUM(output_tokens) AS BIGINT), CAST(SUM(cache_creation_5m) AS BIGINT), \
         CAST(SUM(cache_creation_1h) AS BIGINT), CAST(SUM(cache_read_tokens) AS BIGINT), \
         CAST(SUM(cost_nanos) AS BIGINT), CAST(SUM(cost_unknown) AS BIGINT) FROM usage_hourly \
         WHERE hour_ms >= ? AND hour_ms < ? GROUP BY {group} ORDER BY 2, 1"
    )
}

/// Recent requests, newest first, filtered by the conditions present.
pub fn requests_sql(q: &super::tenants::RequestQuery) -> String {
    let mut sql = format!("SELECT {REQUEST_COLUMNS} FROM request_log WHERE 1 = 1");
    if q.key.is_some() {
        sql.push_str(" AND key_name = ?");
    }
    if q.account.is_some() {
        sql.push_str(" AND account_name = ?");
    }
    if q.status.is_some() {
        sql.push_str(" AND status = ?");
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    sql
}

/// A rollup group: (hour, key id, account id, model).
pub type RollupKey<'a> = (i64, i64, i64, &'a str);
/// A rollup's sums: key name, account name (the group's last), requests, tokens, known cost, requests of unknown cost.
pub type RollupSums<'a> = (&'a str, &'a str, u64, super::tenants::Tokens, i64, u64);

/// Request rows summed per (hour, key, account, model), in that order: one upsert per group, not per request. The
/// groups borrow the rows' text (no string copied per row).
pub fn rollups(rows: &[super::tenants::RequestRecord]) -> Vec<(RollupKey<'_>, RollupSums<'_>)> {
    let mut groups: std::collections::BTreeMap<RollupKey<'_>, RollupSums<'_>> =
        std::collections::BTreeMap::new();
    for r in rows {
        let hour = r.at.timestamp_millis().div_euclid(HOUR_MS) * HOUR_MS;
        let g = groups
            .entry((hour, r.key_id, r.account_id, r.model.as_str()))
            .or_insert_with(|| (&r.key, &r.account, 0, Default::default(), 0, 0));
        g.0 = &r.key;
        g.1 = &r.account;
        g.2 += 1;
        g.3.add(&r.tokens);
        match r.cost_nanos {
            Some(c) => g.4 += c,
            None => g.5 += 1,
        }
    }
    groups.into_iter().collect()
}

/// Generates `impl TenantStore` for a sqlx backend; `bump_seq`, `unavailable` and `is_unique_violation` come from
/// `sql_store!` in the same module.
macro_rules! tenant_store {
    ($store:ty, $row:ty, $q:expr) => {
        fn key_from_row(r: &$row) -> Result<crate::keys::ClientKey, StoreError> {
            use sqlx::Row;
            let get_err = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
            let millis = |col: &str| -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
                let v: Option<i64> = r.try_get(col).map_err(get_err)?;
                Ok(v.and_then(from_millis))
            };
            let required = |col: &str| -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
                millis(col)?.ok_or_else(|| StoreError::Corrupt(format!("{col} missing")))
            };
            let limits: String = r.try_get("limits").map_err(get_err)?;
            Ok(crate::keys::ClientKey {
                id: r.try_get("id").map_err(get_err)?,
                name: r.try_get("name").map_err(get_err)?,
                prefix: r.try_get("prefix").map_err(get_err)?,
                hash: r.try_get("hash").map_err(get_err)?,
                note: r.try_get("note").map_err(get_err)?,
                enabled: r.try_get::<i64, _>("enabled").map_err(get_err)? != 0,
                limits: serde_json::from_str(&limits)
                    .map_err(|e| StoreError::Corrupt(format!("key limits: {e}")))?,
                expires_at: millis("expires_at_ms")?,
                created_at: required("created_at_ms")?,
                updated_at: required("updated_at_ms")?,
                last_used_at: millis("last_used_at_ms")?,
            })
        }

        fn request_from_row(r: &$row) -> Result<super::tenants::RequestRecord, StoreError> {
            use super::tenants_sql::to_u64;
            use sqlx::Row;
            let get_err = |e: sqlx::Error| StoreError::Corrupt(e.to_string());
            let n = |col: &str| -> Result<u64, StoreError> {
                Ok(to_u64(r.try_get::<i64, _>(col).map_err(get_err)?))
            };
            let at: i64 = r.try_get("at_ms").map_err(get_err)?;
            Ok(super::tenants::RequestRecord {
                at: from_millis(at).ok_or_else(|| StoreError::Corrupt("at_ms".into()))?,
                key_id: r.try_get("key_id").map_err(get_err)?,
                key: r.try_get("key_name").map_err(get_err)?,
                account_id: r.try_get("account_id").map_err(get_err)?,
                account: r.try_get("account_name").map_err(get_err)?,
                model: r.try_get("model").map_err(get_err)?,
                route: r.try_get("route").map_err(get_err)?,
                stream: r.try_get::<i64, _>("stream").map_err(get_err)? != 0,
                status: u16::try_from(r.try_get::<i64, _>("status").map_err(get_err)?).unwrap_or(0),
                error_type: r.try_get("error_type").map_err(get_err)?,
                tokens: super::tenants::Tokens {
                    input: n("input_tokens")?,
                    output: n("output_tokens")?,
                    cache_creation_5m: n("cache_creation_5m")?,
                    cache_creation_1h: n("cache_creation_1h")?,
                    cache_read: n("cache_read_tokens")?,
                },
                latency_ms: n("latency_ms")?,
                ttfb_ms: r
                    .try_get::<Option<i64>, _>("ttfb_ms")
                    .map_err(get_err)?
                    .map(to_u64),
                cost_nanos: r.try_get("cost_nanos").map_err(get_err)?,
            })
        }

        impl $store {
            async fn fetch_key(&self, id: i64) -> Result<crate::keys::ClientKey, StoreError> {
                let row = sqlx::query(sqlx::AssertSqlSafe($q(super::tenants_sql::SELECT_KEY)))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(unavailable)?;
                row.map(|r| key_from_row(&r))
                    .transpose()?
                    .ok_or_else(|| StoreError::KeyNotFound(id.to_string()))
            }

            /// The parameters of one chunk's insert, built in one go (not `Query::bind` by bind); text is shared
            /// through `texts` rather than copied per row.
            fn request_arguments(
                chunk: &[super::tenants::RequestRecord],
                texts: &mut super::tenants_sql::RequestTexts,
            ) -> Result<<<$row as sqlx::Row>::Database as sqlx::Database>::Arguments, StoreError>
            {
                use super::tenants_sql::to_i64;
                use sqlx::Arguments;
                let mut args =
                    <<$row as sqlx::Row>::Database as sqlx::Database>::Arguments::default();
                args.reserve(chunk.len() * super::tenants_sql::REQUEST_FIELDS, 0);
                let encode = |e: sqlx::error::BoxDynError| StoreError::Unavailable(e.to_string());
                for r in chunk {
                    let t = &r.tokens;
                    args.add(to_millis(r.at)).map_err(encode)?;
                    args.add(r.key_id).map_err(encode)?;
                    args.add(texts.key.get(&r.key)).map_err(encode)?;
                    args.add(r.account_id).map_err(encode)?;
                    args.add(texts.account.get(&r.account)).map_err(encode)?;
                    args.add(texts.model.get(&r.model)).map_err(encode)?;
                    args.add(texts.route.get(&r.route)).map_err(encode)?;
                    args.add(i64::from(r.stream)).map_err(encode)?;
                    args.add(i64::from(r.status)).map_err(encode)?;
                    args.add(r.error_type.as_deref().map(|e| texts.error_type.get(e)))
                        .map_err(encode)?;
                    args.add(to_i64(t.input)).map_err(encode)?;
                    args.add(to_i64(t.output)).map_err(encode)?;
                    args.add(to_i64(t.cache_creation_5m)).map_err(encode)?;
                    args.add(to_i64(t.cache_creation_1h)).map_err(encode)?;
                    args.add(to_i64(t.cache_read)).map_err(encode)?;
                    args.add(to_i64(r.latency_ms)).map_err(encode)?;
                    args.add(r.ttfb_ms.map(to_i64)).map_err(encode)?;
                    args.add(r.cost_nanos).map_err(encode)?;
                }
                Ok(args)
            }

            async fn write_requests(
                tx: &mut <<$row as sqlx::Row>::Database as sqlx::Database>::Connection,
                rows: &[super::tenants::RequestRecord],
            ) -> Result<(), StoreError> {
                use super::tenants_sql::to_i64;
                // One statement text per chunk size (a power of two up to INSERT_CHUNK), built once.
                static SQL: [std::sync::OnceLock<String>; super::sql::CHUNK_SIZES] =
                    [const { std::sync::OnceLock::new() }; super::sql::CHUNK_SIZES];
                let mut texts = super::tenants_sql::RequestTexts::default();
                for chunk in super::sql::insert_chunks(rows) {
                    let sql = SQL[chunk.len().ilog2() as usize].get_or_init(|| {
                        String::from($q(&super::tenants_sql::insert_requests_sql(chunk.len())))
                    });
                    let args = Self::request_arguments(chunk, &mut texts)?;
                    sqlx::query_with(sqlx::AssertSqlSafe(sql.as_str()), args)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                }
                let upsert = $q(super::tenants_sql::UPSERT_HOURLY);
                for ((hour, key_id, account_id, model), (key, account, n, t, cost, unknown)) in
                    super::tenants_sql::rollups(rows)
                {
                    sqlx::query(sqlx::AssertSqlSafe(upsert.clone()))
                        .bind(hour)
                        .bind(key_id)
                        .bind(key)
                        .bind(account_id)
                        .bind(account)
                        .bind(model)
                        .bind(to_i64(n))
                        .bind(to_i64(t.input))
                        .bind(to_i64(t.output))
                        .bind(to_i64(t.cache_creation_5m))
                        .bind(to_i64(t.cache_creation_1h))
                        .bind(to_i64(t.cache_read))
                        .bind(cost)
                        .bind(to_i64(unknown))
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                }
                Ok(())
            }

            async fn write_counters(
                tx: &mut <<$row as sqlx::Row>::Database as sqlx::Database>::Connection,
                batch: &super::tenants::UsageBatch,
            ) -> Result<(), StoreError> {
                use super::tenants_sql::to_i64;
                let now = to_millis(crate::clock::system_now());
                let add = $q(super::tenants_sql::ADD_COUNTER);
                for c in &batch.counters {
                    sqlx::query(sqlx::AssertSqlSafe(add.clone()))
                        .bind(c.key_id)
                        .bind(c.window.kind())
                        .bind(c.window.start_ms())
                        .bind(to_i64(c.requests))
                        .bind(to_i64(c.tokens))
                        .bind(c.cost_nanos)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                }
                let set = $q(super::tenants_sql::SET_IN_FLIGHT);
                for (replica, key_id, n) in &batch.in_flight {
                    sqlx::query(sqlx::AssertSqlSafe(set.clone()))
                        .bind(*key_id)
                        .bind(*replica)
                        .bind(to_i64(*n))
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                }
                let touch = $q(super::tenants_sql::TOUCH_KEY);
                for (key_id, at) in &batch.last_used {
                    sqlx::query(sqlx::AssertSqlSafe(touch.clone()))
                        .bind(to_millis(*at))
                        .bind(*key_id)
                        .bind(to_millis(*at))
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                }
                Ok(())
            }
        }

        impl super::tenants::TenantStore for $store {
            fn list_keys(&self) -> StoreFuture<'_, Vec<crate::keys::ClientKey>> {
                Box::pin(async move {
                    let rows = sqlx::query(super::tenants_sql::SELECT_KEYS)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    rows.iter().map(key_from_row).collect()
                })
            }

            fn insert_key(
                &self,
                k: crate::keys::NewKey,
            ) -> StoreFuture<'_, crate::keys::ClientKey> {
                Box::pin(async move {
                    use sqlx::Row;
                    let now = to_millis(crate::clock::system_now());
                    let limits = serde_json::to_string(&k.limits)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let mut tx = self
                        .pool
                        .begin_with(<$store>::BEGIN)
                        .await
                        .map_err(unavailable)?;
                    let row = sqlx::query(sqlx::AssertSqlSafe($q(super::tenants_sql::INSERT_KEY)))
                        .bind(&k.name)
                        .bind(&k.prefix)
                        .bind(&k.hash)
                        .bind(&k.note)
                        .bind(limits)
                        .bind(k.expires_at.map(to_millis))
                        .bind(now)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(|e| {
                            if is_unique_violation(&e) {
                                StoreError::DuplicateKey(k.name.clone())
                            } else {
                                unavailable(e)
                            }
                        })?;
                    let id: i64 = row
                        .try_get(0)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    bump_seq(&mut *tx).await?;
                    tx.commit().await.map_err(unavailable)?;
                    self.fetch_key(id).await
                })
            }

            fn update_key(
                &self,
                k: crate::keys::ClientKey,
            ) -> StoreFuture<'_, crate::keys::ClientKey> {
                Box::pin(async move {
                    let limits = serde_json::to_string(&k.limits)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    let mut tx = self
                        .pool
                        .begin_with(<$store>::BEGIN)
                        .await
                        .map_err(unavailable)?;
                    let done = sqlx::query(sqlx::AssertSqlSafe($q(super::tenants_sql::UPDATE_KEY)))
                        .bind(&k.name)
                        .bind(&k.note)
                        .bind(i64::from(k.enabled))
                        .bind(limits)
                        .bind(k.expires_at.map(to_millis))
                        .bind(to_millis(crate::clock::system_now()))
                        .bind(k.id)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| {
                            if is_unique_violation(&e) {
                                StoreError::DuplicateKey(k.name.clone())
                            } else {
                                unavailable(e)
                            }
                        })?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::KeyNotFound(k.id.to_string()));
                    }
                    bump_seq(&mut *tx).await?;
                    tx.commit().await.map_err(unavailable)?;
                    self.fetch_key(k.id).await
                })
            }

            fn remove_key(&self, id: i64) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    let mut tx = self
                        .pool
                        .begin_with(<$store>::BEGIN)
                        .await
                        .map_err(unavailable)?;
                    let done = sqlx::query(sqlx::AssertSqlSafe($q(super::tenants_sql::DELETE_KEY)))
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::KeyNotFound(id.to_string()));
                    }
                    bump_seq(&mut *tx).await?;
                    tx.commit().await.map_err(unavailable)
                })
            }

            fn record_usage<'a>(
                &'a self,
                batch: &'a super::tenants::UsageBatch,
            ) -> StoreFuture<'a, ()> {
                Box::pin(async move {
                    let mut tx = self
                        .pool
                        .begin_with(<$store>::BEGIN)
                        .await
                        .map_err(unavailable)?;
                    Self::write_requests(&mut *tx, &batch.requests).await?;
                    Self::write_counters(&mut *tx, batch).await?;
                    tx.commit().await.map_err(unavailable)
                })
            }

            fn counters(
                &self,
                q: super::tenants::CounterQuery,
            ) -> StoreFuture<
                '_,
                (
                    Vec<super::tenants::CounterTotal>,
                    Vec<super::tenants::InFlight>,
                ),
            > {
                Box::pin(async move {
                    use super::tenants_sql::to_u64;
                    let rows: Vec<(i64, String, i64, i64, i64, i64)> = sqlx::query_as(
                        sqlx::AssertSqlSafe($q(super::tenants_sql::SELECT_COUNTERS)),
                    )
                    .bind(q.previous_minute)
                    .bind(q.day)
                    .bind(q.month)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?;
                    let totals = rows
                        .into_iter()
                        .filter_map(|(key_id, kind, start, requests, tokens, cost_nanos)| {
                            Some(super::tenants::CounterTotal {
                                key_id,
                                window: super::tenants::Window::parse(&kind, start)?,
                                requests: to_u64(requests),
                                tokens: to_u64(tokens),
                                cost_nanos,
                            })
                        })
                        .collect();
                    let in_flight: Vec<(i64, Option<i64>)> = sqlx::query_as(sqlx::AssertSqlSafe(
                        $q(super::tenants_sql::SELECT_IN_FLIGHT),
                    ))
                    .bind(q.replica)
                    .bind(to_millis(q.in_flight_since))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(unavailable)?;
                    let in_flight = in_flight
                        .into_iter()
                        .map(|(key_id, n)| super::tenants::InFlight {
                            key_id,
                            requests: to_u64(n.unwrap_or(0)),
                        })
                        .collect();
                    Ok((totals, in_flight))
                })
            }

            fn usage(
                &self,
                q: super::tenants::UsageQuery,
            ) -> StoreFuture<'_, Vec<super::tenants::UsageRow>> {
                Box::pin(async move {
                    use super::tenants_sql::to_u64;
                    type Sums = (
                        String,
                        i64,
                        Option<i64>,
                        Option<i64>,
                        Option<i64>,
                        Option<i64>,
                        Option<i64>,
                        Option<i64>,
                        Option<i64>,
                        Option<i64>,
                    );
                    let rows: Vec<Sums> =
                        sqlx::query_as(sqlx::AssertSqlSafe($q(&super::tenants_sql::usage_sql(&q))))
                            .bind(to_millis(q.from))
                            .bind(to_millis(q.to))
                            .fetch_all(&self.pool)
                            .await
                            .map_err(unavailable)?;
                    let n = |v: Option<i64>| to_u64(v.unwrap_or(0));
                    Ok(rows
                        .into_iter()
                        .map(
                            |(name, bucket, requests, i, o, c5, c1, cr, cost, unknown)| {
                                super::tenants::UsageRow {
                                    name,
                                    bucket: q
                                        .bucket
                                        .and_then(|_| from_millis(bucket))
                                        .map(crate::clock::rfc3339),
                                    requests: n(requests),
                                    tokens: super::tenants::Tokens {
                                        input: n(i),
                                        output: n(o),
                                        cache_creation_5m: n(c5),
                                        cache_creation_1h: n(c1),
                                        cache_read: n(cr),
                                    },
                                    cost_nanos: cost.unwrap_or(0),
                                    cost_unknown_requests: n(unknown),
                                }
                            },
                        )
                        .collect())
                })
            }

            fn recent_requests(
                &self,
                q: super::tenants::RequestQuery,
            ) -> StoreFuture<'_, Vec<super::tenants::RequestRecord>> {
                Box::pin(async move {
                    let sql = $q(&super::tenants_sql::requests_sql(&q));
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    if let Some(k) = &q.key {
                        query = query.bind(k.clone());
                    }
                    if let Some(a) = &q.account {
                        query = query.bind(a.clone());
                    }
                    if let Some(s) = q.status {
                        query = query.bind(i64::from(s));
                    }
                    let rows = query
                        .bind(i64::from(q.limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    rows.iter().map(request_from_row).collect()
                })
            }

            fn prune_usage(
                &self,
                requests_before: chrono::DateTime<chrono::Utc>,
                rollups_before: chrono::DateTime<chrono::Utc>,
                now: chrono::DateTime<chrono::Utc>,
            ) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    use super::tenants_sql::DAY_MS;
                    let now_ms = to_millis(now);
                    let mut tx = self
                        .pool
                        .begin_with(<$store>::BEGIN)
                        .await
                        .map_err(unavailable)?;
                    sqlx::query(sqlx::AssertSqlSafe($q(super::tenants_sql::PRUNE_REQUESTS)))
                        .bind(to_millis(requests_before))
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    sqlx::query(sqlx::AssertSqlSafe($q(super::tenants_sql::PRUNE_ROLLUPS)))
                        .bind(to_millis(rollups_before))
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    sqlx::query(sqlx::AssertSqlSafe($q(super::tenants_sql::PRUNE_COUNTERS)))
                        .bind(now_ms - 5 * 60_000)
                        .bind(now_ms - 3 * DAY_MS)
                        .bind(now_ms - 70 * DAY_MS)
                        .bind(now_ms - 60_000)
                        .execute(&mut *tx)
                        .await
                        .map_err(unavailable)?;
                    tx.commit().await.map_err(unavailable)
                })
            }
        }
    };
}

pub(crate) use tenant_store;

#[cfg(test)]
mod tests {
    use super::*;

    /// Repeated text is one allocation (a reference count per row to bind, not a copy); every value is still itself,
    /// whatever the order and however many distinct values a column has.
    #[test]
    fn repeated_text_is_shared_and_every_value_kept() {
        use std::sync::Arc;
        let mut t = SharedText::default();
        let first: Vec<Arc<str>> = ["a", "b", "c", "d"].map(|v| t.get(v)).into();
        for (v, kept) in ["a", "b", "c", "d"].iter().zip(&first) {
            assert!(Arc::ptr_eq(kept, &t.get(v)), "{v}: one allocation");
        }
        assert_eq!(&*t.get("e"), "e");
        let again = t.get("a");
        assert_eq!(&*again, "a");
        assert!(!Arc::ptr_eq(&first[0], &again), "at most KEPT values held");
        let values: Vec<String> = (0..50).map(|i| format!("v{}", i * 7 % 9)).collect();
        for v in &values {
            assert_eq!(&*t.get(v), v.as_str());
        }
        assert_eq!(&*t.get(""), "");
    }

    /// The statement text is the one QueryBuilder wrote bind by bind (so the statements prepared before are the same).
    #[test]
    fn the_request_insert_is_the_text_the_query_builder_wrote() {
        for n in [1, 2, crate::store::sql::INSERT_CHUNK] {
            let mut b = sqlx::QueryBuilder::<sqlx::Sqlite>::new(INSERT_REQUESTS);
            b.push_values(0..n, |mut row, _| {
                for _ in 0..REQUEST_FIELDS {
                    row.push_bind(0i64);
                }
            });
            assert_eq!(insert_requests_sql(n), b.sql().as_str(), "{n} rows");
        }
        assert_eq!(INSERT_REQUESTS.matches(',').count() + 1, REQUEST_FIELDS);
    }
}
