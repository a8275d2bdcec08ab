//! The SQL of [`super::ops::OpsStore`], written once for SQLite and PostgreSQL (`?` placeholders; numbered for
//! PostgreSQL by the backend's `$q`), like `sql_store!`.

pub const INSERT_AUDIT: &str =
    "INSERT INTO audit_log (at_ms, actor, action, target, status, detail) VALUES (?, ?, ?, ?, ?, ?) RETURNING id";
pub const LIST_AUDIT: &str =
    "SELECT id, at_ms, actor, action, target, status, detail FROM audit_log \
     WHERE id < ? ORDER BY id DESC LIMIT ?";
pub const UPSERT_REPLICA: &str = "INSERT INTO replicas (id, version, started_at_ms, seen_at_ms, detail) \
     VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET version = excluded.version, \
     started_at_ms = excluded.started_at_ms, seen_at_ms = excluded.seen_at_ms, detail = excluded.detail";
pub const PRUNE_REPLICAS: &str = "DELETE FROM replicas WHERE seen_at_ms < ?";
pub const LIST_REPLICAS: &str =
    "SELECT id, version, started_at_ms, seen_at_ms, detail FROM replicas WHERE seen_at_ms >= ? ORDER BY seen_at_ms DESC";

/// Heartbeats older than this are deleted (a replica gone a day is forgotten).
pub const REPLICA_RETENTION_MS: i64 = 24 * 3600 * 1000;

type AuditRow = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
);
type ReplicaRow = (String, String, i64, i64, String);

pub fn audit_from_row(r: AuditRow) -> super::ops::AuditEntry {
    let (id, at, actor, action, target, status, detail) = r;
    super::ops::AuditEntry {
        id,
        at: crate::clock::from_millis(at).unwrap_or_default(),
        actor,
        action,
        target,
        status: u16::try_from(status).unwrap_or(0),
        detail,
    }
}

pub fn replica_from_row(r: ReplicaRow) -> super::ops::ReplicaBeat {
    let (id, version, started, seen, detail) = r;
    super::ops::ReplicaBeat {
        id,
        version,
        started_at: crate::clock::from_millis(started).unwrap_or_default(),
        seen_at: crate::clock::from_millis(seen).unwrap_or_default(),
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
    }
}

/// Generates `impl OpsStore` for a sqlx backend whose struct has a `pool` field.
macro_rules! ops_store {
    ($store:ty, $q:expr) => {
        impl super::ops::OpsStore for $store {
            fn append_audit(&self, e: super::ops::AuditEntry) -> StoreFuture<'_, i64> {
                Box::pin(async move {
                    let id: i64 =
                        sqlx::query_scalar(sqlx::AssertSqlSafe($q(super::ops_sql::INSERT_AUDIT)))
                            .bind(to_millis(e.at))
                            .bind(&e.actor)
                            .bind(&e.action)
                            .bind(&e.target)
                            .bind(i64::from(e.status))
                            .bind(&e.detail)
                            .fetch_one(&self.pool)
                            .await
                            .map_err(unavailable)?;
                    Ok(id)
                })
            }

            fn list_audit(
                &self,
                limit: u32,
                before: Option<i64>,
            ) -> StoreFuture<'_, Vec<super::ops::AuditEntry>> {
                Box::pin(async move {
                    let rows: Vec<(
                        i64,
                        i64,
                        String,
                        String,
                        Option<String>,
                        i64,
                        Option<String>,
                    )> = sqlx::query_as(sqlx::AssertSqlSafe($q(super::ops_sql::LIST_AUDIT)))
                        .bind(before.unwrap_or(i64::MAX))
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    Ok(rows
                        .into_iter()
                        .map(super::ops_sql::audit_from_row)
                        .collect())
                })
            }

            fn heartbeat(&self, b: super::ops::ReplicaBeat) -> StoreFuture<'_, ()> {
                Box::pin(async move {
                    let seen = to_millis(b.seen_at);
                    sqlx::query(sqlx::AssertSqlSafe($q(super::ops_sql::PRUNE_REPLICAS)))
                        .bind(seen - super::ops_sql::REPLICA_RETENTION_MS)
                        .execute(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    sqlx::query(sqlx::AssertSqlSafe($q(super::ops_sql::UPSERT_REPLICA)))
                        .bind(&b.id)
                        .bind(&b.version)
                        .bind(to_millis(b.started_at))
                        .bind(seen)
                        .bind(b.detail.to_string())
                        .execute(&self.pool)
                        .await
                        .map_err(unavailable)?;
                    Ok(())
                })
            }

            fn replicas(
                &self,
                since: chrono::DateTime<chrono::Utc>,
            ) -> StoreFuture<'_, Vec<super::ops::ReplicaBeat>> {
                Box::pin(async move {
                    let rows: Vec<(String, String, i64, i64, String)> =
                        sqlx::query_as(sqlx::AssertSqlSafe($q(super::ops_sql::LIST_REPLICAS)))
                            .bind(to_millis(since))
                            .fetch_all(&self.pool)
                            .await
                            .map_err(unavailable)?;
                    Ok(rows
                        .into_iter()
                        .map(super::ops_sql::replica_from_row)
                        .collect())
                })
            }
        }
    };
}

pub(crate) use ops_store;
